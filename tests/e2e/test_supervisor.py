"""The local fleet keeps itself up: what dies is restarted, as a kubelet would; what was
stopped on purpose stays stopped until started again.

A one-cluster fleet of its own (beside the session fleet's state directory), since
these tests kill its components.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.devenv.controlplane import recorded_plane
from fleet.devenv.kubeapi import KubeAPI
from fleet.devenv.processes import is_running
from fleet.devenv.state import FleetState, load_state

from .conftest import STATE_DIR as SESSION_STATE_DIR
from .conftest import fleet_cli, wait_until

STATE_DIR = SESSION_STATE_DIR.with_name(f"{SESSION_STATE_DIR.name}-supervisor")
KILLED = ("gpu-01-controller-manager", "management-controller-manager")
LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager"


@pytest.fixture(scope="module")
def small_fleet() -> Iterator[FleetState]:
    fleet_cli("dev", "down", "--state-dir", str(STATE_DIR))
    started = fleet_cli(
        "dev", "up", "--clusters", "1", "--datacenters", "1", "--state-dir", str(STATE_DIR)
    )
    assert started.returncode == 0, started.stderr
    state = load_state(STATE_DIR)
    assert state is not None and state.ready
    try:
        yield state
    finally:
        fleet_cli("dev", "down", "--state-dir", str(STATE_DIR))


def status() -> tuple[int, dict[str, dict[str, Any]]]:
    result = fleet_cli("dev", "status", "-o", "json", "--state-dir", str(STATE_DIR))
    found = {c["name"]: c for c in json.loads(result.stdout)["components"]}
    return result.returncode, found


def admin(state: FleetState, plane: str) -> KubeAPI:
    server = state.management_server if plane == "management" else state.cluster(plane).server
    return KubeAPI(recorded_plane(Path(state.state_dir), plane, server).admin_credentials)


def test_up_leaves_a_supervisor_and_every_component_running(small_fleet: FleetState):
    code, found = status()
    assert code == 0
    assert found["supervisor"]["state"] == "running"
    assert {c["state"] for c in found.values()} == {"running"}
    assert {c["restarts"] for c in found.values()} == {0}
    assert found["management-apiserver"]["ready"] is True
    assert found["gpu-01-apiserver"]["ready"] is True


def test_killed_controller_managers_come_back(small_fleet: FleetState):
    _, before = status()
    holders = {
        plane: admin(small_fleet, plane).get(LEASE)["spec"]["holderIdentity"]
        for plane in ("management", "gpu-01")
    }
    for name in KILLED:
        os.kill(before[name]["pid"], signal.SIGKILL)

    def back() -> dict[str, dict[str, Any]] | None:
        code, found = status()
        restarted = all(
            found[name]["pid"] != before[name]["pid"]
            and found[name]["state"] == "running"
            and found[name]["restarts"] == 1
            for name in KILLED
        )
        return found if code == 0 and restarted else None

    found = wait_until(back, 60, "the supervisor to restart both controller managers", status)
    for name in KILLED:
        assert found[name]["lastExit"].startswith("exited")
        assert found[name]["lastRestart"] is not None
        assert is_running(next(r for r in load_state(STATE_DIR).processes if r.name == name))
    assert found["management-apiserver"]["ready"] is True
    assert found["gpu-01-apiserver"]["ready"] is True
    assert admin(small_fleet, "gpu-01").get("/api/v1/nodes")["items"]

    # The new controller managers really work: each takes its plane's leader lease
    # once the killed one's has expired.
    for plane, holder in holders.items():
        api = admin(small_fleet, plane)
        wait_until(
            lambda api=api, holder=holder: api.get(LEASE)["spec"]["holderIdentity"] != holder,
            60,
            f"the restarted {plane} controller manager to take the leader lease",
        )

    table = fleet_cli("dev", "status", "--state-dir", str(STATE_DIR))
    assert table.returncode == 0
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert "running" in rows["gpu-01-controller-manager"]
    assert " 1 (" in rows["gpu-01-controller-manager"], "restarts, and how long ago"
    supervisor_log = Path(small_fleet.state_dir, "logs", "supervisor.log").read_text()
    assert "restarted gpu-01-controller-manager" in supervisor_log


def test_a_cluster_stopped_on_purpose_stays_stopped_until_started(small_fleet: FleetState):
    _, before = status()
    stopped = fleet_cli("dev", "stop", "gpu-01", "--state-dir", str(STATE_DIR))
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == "gpu-01: API server stopped\n"

    # Longer than the supervisor's first backoffs (1 s, 2 s, 4 s) and poll interval.
    time.sleep(8)
    code, found = status()
    assert code == 0, "a component stopped on purpose is not wanted to run"
    apiserver = found["gpu-01-apiserver"]
    assert apiserver["state"] == "stopped on purpose"
    assert apiserver["pid"] == before["gpu-01-apiserver"]["pid"]
    assert apiserver["restarts"] == 0
    assert apiserver["ready"] is False
    table = fleet_cli("dev", "status", "--state-dir", str(STATE_DIR))
    assert (
        "gpu-01-apiserver: stopped on purpose; `fleet dev start gpu-01` starts it again"
        in table.stdout
    )

    started = fleet_cli("dev", "start", "gpu-01", "--state-dir", str(STATE_DIR))
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("gpu-01: started gpu-01-apiserver")
    code, found = status()
    assert code == 0
    assert {c["state"] for c in found.values()} == {"running"}
    assert found["gpu-01-apiserver"]["ready"] is True
    assert found["gpu-01-apiserver"]["restarts"] == 0, "a start on purpose is not a restart"
    assert admin(small_fleet, "gpu-01").get("/api/v1/nodes")["items"]
