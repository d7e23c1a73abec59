"""When the supervisor restarts a component, decided without any process."""

import pytest

from fleet.devenv.restarts import Restarts
from fleet.devenv.supervision import (
    STABLE_SECONDS,
    Action,
    backoff_seconds,
    decide,
    restart_failed,
)

NOW = 1_000_000.0


def test_backoff_doubles_from_one_second_and_is_capped_at_a_minute():
    assert [backoff_seconds(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_seconds(0) == 1


def test_a_running_component_is_kept():
    decision = decide(Restarts(pid=7), pid=7, running=True, held=False, uptime=5, now=NOW)
    assert decision.action is Action.KEEP
    assert decision.restarts == Restarts(pid=7)


def test_a_component_found_dead_waits_out_its_backoff_then_restarts():
    died = decide(Restarts(pid=7), pid=7, running=False, held=False, uptime=30, now=NOW)
    assert died.action is Action.DIED
    assert died.restarts.next_attempt == NOW + 1

    waiting = decide(died.restarts, pid=7, running=False, held=False, uptime=30, now=NOW + 0.5)
    assert waiting.action is Action.WAIT
    assert waiting.restarts == died.restarts

    due = decide(died.restarts, pid=7, running=False, held=False, uptime=31, now=NOW + 1)
    assert due.action is Action.RESTART
    assert due.restarts == Restarts(pid=7, count=1, failures=1, last_restart=NOW + 1)


def test_a_component_that_keeps_dying_waits_longer_each_time():
    restarts = Restarts(pid=8, count=3, failures=3, last_restart=NOW - 10)
    died = decide(restarts, pid=8, running=False, held=False, uptime=2, now=NOW)
    assert died.action is Action.DIED
    assert died.restarts.next_attempt == NOW + 8


def test_a_component_that_stayed_up_starts_its_backoff_afresh():
    restarts = Restarts(pid=8, count=3, failures=3, last_restart=NOW - 500)
    died = decide(restarts, pid=8, running=False, held=False, uptime=STABLE_SECONDS, now=NOW)
    assert died.restarts.failures == 0
    assert died.restarts.next_attempt == NOW + 1
    assert died.restarts.count == 3, "the restart count is never reset"

    running = decide(restarts, pid=8, running=True, held=False, uptime=STABLE_SECONDS, now=NOW)
    assert running.restarts.failures == 0


@pytest.mark.parametrize("pending", [None, NOW - 5])
def test_a_component_of_a_cluster_stopped_on_purpose_is_left_alone(pending):
    restarts = Restarts(pid=9, next_attempt=pending)
    decision = decide(restarts, pid=9, running=False, held=True, uptime=1, now=NOW)
    assert decision.action is Action.KEEP
    assert decision.restarts.next_attempt is None


def test_a_process_started_by_someone_else_cancels_the_pending_restart():
    restarts = Restarts(pid=9, count=1, failures=1, next_attempt=NOW - 1)
    decision = decide(restarts, pid=10, running=True, held=False, uptime=1, now=NOW)
    assert decision.action is Action.KEEP
    assert decision.restarts == Restarts(pid=10, count=1, failures=1)


def test_a_new_process_that_dies_is_a_new_death_not_a_due_restart():
    restarts = Restarts(pid=9, count=1, failures=1, next_attempt=NOW - 1)
    decision = decide(restarts, pid=10, running=False, held=False, uptime=1, now=NOW)
    assert decision.action is Action.DIED
    assert decision.restarts.next_attempt == NOW + 2


def test_a_restart_that_cannot_start_the_process_is_tried_again_later():
    restarts = Restarts(pid=9, count=2, failures=2, last_restart=NOW)
    failed = restart_failed(restarts, "kube-apiserver does not exist", NOW)
    assert failed.next_attempt == NOW + 4
    assert failed.last_exit == "kube-apiserver does not exist"
    assert decide(failed, pid=9, running=False, held=False, uptime=1, now=NOW + 4).action is (
        Action.RESTART
    )
