"""The rows of `fleet dev status`, decided from observations without any process."""

import pytest

from fleet.devenv.components import DEAD, RESTARTING, RUNNING, STOPPED, Observed, statuses
from fleet.devenv.processes import ProcessRecord
from fleet.devenv.restarts import Restarts
from fleet.devenv.roles import Identity, held, identify


@pytest.mark.parametrize(
    ("name", "identity"),
    [
        ("etcd", Identity("etcd", "")),
        ("registry-dc-1", Identity("registry", "")),
        ("management-apiserver", Identity("apiserver", "management")),
        ("management-controller-manager", Identity("controller-manager", "management")),
        ("gpu-01-scheduler", Identity("scheduler", "gpu-01")),
        ("gpu-12-kwok", Identity("kwok", "gpu-12")),
        ("controller", Identity("controller", "management")),
        ("supervisor", Identity("supervisor", "")),
    ],
)
def test_components_are_identified_by_the_names_up_gives_them(name, identity):
    assert identify(name) == identity


def test_only_the_components_of_a_stopped_cluster_are_held():
    assert held("gpu-01-controller-manager", ["gpu-01"])
    assert not held("gpu-02-controller-manager", ["gpu-01"])
    assert not held("etcd", ["gpu-01"])


def record(name: str, pid: int) -> ProcessRecord:
    return ProcessRecord(name, pid, 100, (name,), f"logs/{name}.log")


RECORDS = [
    record("etcd", 10),
    record("gpu-01-apiserver", 11),
    record("gpu-01-controller-manager", 12),
    record("gpu-02-controller-manager", 13),
    record("supervisor", 14),
]


def observed(supervisor_runs: bool = True) -> dict[str, Observed]:
    return {
        "etcd": Observed(True, 600.4),
        "gpu-01-apiserver": Observed(False, 900, ready=False),
        "gpu-01-controller-manager": Observed(False, 900),
        "gpu-02-controller-manager": Observed(False, 3),
        "supervisor": Observed(supervisor_runs, 600),
    }


def test_states_say_who_will_bring_a_component_back():
    ledger = {"gpu-02-controller-manager": Restarts(pid=13, count=2, next_attempt=50.0)}
    found = {s.name: s for s in statuses(RECORDS, observed(), ledger, ["gpu-01"])}
    assert {name: s.state for name, s in found.items()} == {
        "etcd": RUNNING,
        "gpu-01-apiserver": STOPPED,
        "gpu-01-controller-manager": STOPPED,
        "gpu-02-controller-manager": RESTARTING,
        "supervisor": RUNNING,
    }
    assert found["gpu-02-controller-manager"].next_restart == 50.0
    assert found["gpu-02-controller-manager"].restarts == 2
    assert not found["gpu-02-controller-manager"].fine
    assert found["gpu-01-apiserver"].fine, "stopped on purpose is not wanted to run"
    assert found["gpu-01-apiserver"].ready is False
    assert found["etcd"].uptime == 600.4
    assert found["gpu-01-apiserver"].uptime is None


def test_without_a_supervisor_a_dead_component_stays_dead():
    found = {s.name: s for s in statuses(RECORDS, observed(supervisor_runs=False), {}, [])}
    assert found["gpu-02-controller-manager"].state == DEAD
    assert found["supervisor"].state == DEAD
    assert found["gpu-01-apiserver"].state == DEAD, "not held, so it is wanted"


def test_status_json_names_times_in_utc_and_leaves_unknowns_null():
    ledger = {
        "gpu-02-controller-manager": Restarts(
            pid=13,
            count=1,
            last_restart=0.0,
            last_exit="killed by SIGKILL",
            next_attempt=61.0,
        )
    }
    found = statuses(RECORDS, observed(), ledger, ["gpu-01"])
    assert [s.to_json() for s in found][::3] == [
        {
            "name": "etcd",
            "role": "etcd",
            "cluster": None,
            "pid": 10,
            "state": RUNNING,
            "restarts": 0,
            "uptimeSeconds": 600,
            "ready": None,
            "lastRestart": None,
            "lastExit": None,
            "nextRestart": None,
        },
        {
            "name": "gpu-02-controller-manager",
            "role": "controller-manager",
            "cluster": "gpu-02",
            "pid": 13,
            "state": RESTARTING,
            "restarts": 1,
            "uptimeSeconds": None,
            "ready": None,
            "lastRestart": "1970-01-01T00:00:00Z",
            "lastExit": "killed by SIGKILL",
            "nextRestart": "1970-01-01T00:01:01Z",
        },
    ]
