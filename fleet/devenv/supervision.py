"""When the supervisor restarts a component: pure decisions, tested without processes.

As a kubelet does for static pods: a component that dies is started again
after a capped exponential backoff that grows while it keeps dying and starts
afresh once it has stayed up a while; one whose cluster was stopped on purpose
is left alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

import tenacity

from fleet.devenv.restarts import Restarts

# 1 s, 2 s, 4 s … capped at 60 s (a kubelet's goes from 10 s to 5 min: too slow for a laptop).
BACKOFF = tenacity.wait_exponential(multiplier=1, min=1, max=60)
# A component that ran this long is healthy again: its next death starts the backoff afresh.
STABLE_SECONDS = 120.0


class Action(enum.Enum):
    KEEP = "keep"  # running, or stopped on purpose: nothing to do
    DIED = "died"  # just found dead: record why, wait out the backoff
    WAIT = "wait"  # dead, backoff not over yet
    RESTART = "restart"  # dead and due: start it again now


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    restarts: Restarts


def backoff_seconds(failures: int) -> float:
    """The wait before restart number `failures` in a row (1 for the first)."""
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(failures, 1)
    return float(BACKOFF(state))


def decide(
    restarts: Restarts,
    *,
    pid: int,
    running: bool,
    held: bool,
    uptime: float,
    now: float,
) -> Decision:
    """What to do about the component recorded with `pid`, and its updated restart facts.

    `held` means its cluster was stopped on purpose; `uptime` is how long ago
    the recorded process started, which for one found dead within a poll
    interval is about how long it lived.
    """
    if restarts.pid != pid:
        # Started by someone else (`up`, `fleet dev start`): any pending restart was for
        # a process that is no longer the one recorded.
        restarts = replace(restarts, pid=pid, next_attempt=None)
    if running:
        failures = 0 if uptime >= STABLE_SECONDS else restarts.failures
        return Decision(Action.KEEP, replace(restarts, failures=failures, next_attempt=None))
    if held:
        return Decision(Action.KEEP, replace(restarts, next_attempt=None))
    if restarts.next_attempt is None:
        failures = 0 if uptime >= STABLE_SECONDS else restarts.failures
        delay = backoff_seconds(failures + 1)
        return Decision(Action.DIED, replace(restarts, failures=failures, next_attempt=now + delay))
    if now < restarts.next_attempt:
        return Decision(Action.WAIT, restarts)
    return Decision(
        Action.RESTART,
        replace(
            restarts,
            count=restarts.count + 1,
            failures=restarts.failures + 1,
            last_restart=now,
            next_attempt=None,
        ),
    )


def restart_failed(restarts: Restarts, reason: str, now: float) -> Restarts:
    """The facts after a restart could not even start the process: try again later."""
    return replace(
        restarts,
        last_exit=reason,
        next_attempt=now + backoff_seconds(restarts.failures + 1),
    )
