"""The supervisor's loop on plain processes: restarts as recorded, leaves held ones alone."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tenacity
from click.testing import CliRunner

from fleet.cli.main import cli
from fleet.devenv import supervision
from fleet.devenv.processes import is_running, start, stop
from fleet.devenv.restarts import load_restarts
from fleet.devenv.state import FleetState, load_state
from fleet.devenv.supervisor import Supervisor

STATUS_HEADER = ["NAME", "ROLE", "CLUSTER", "PID", "STATE", "RESTARTS", "UPTIME", "READY"]


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    """A ready 'fleet' of one shell component that logs its environment, then sleeps."""
    monkeypatch.setattr(supervision, "BACKOFF", tenacity.wait_fixed(0))
    script = tmp_path / "component.sh"
    script.write_text('#!/bin/sh\necho "started with MARK=$MARK"\nexec sleep 300\n')
    script.chmod(0o755)
    log = tmp_path / "logs" / "gpu-01-kwok.log"
    process = start("gpu-01-kwok", [str(script)], log, {"MARK": "kept"})
    state = FleetState(state_dir=str(tmp_path), ready=True, processes=[process.record])
    state.save()
    yield state
    stop((load_state(tmp_path) or state).processes + state.processes, grace=1)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def wait_dead(state: FleetState) -> None:
    deadline = time.monotonic() + 5
    while any(is_running(r) for r in state.processes) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(is_running(r) for r in state.processes), "a killed process still runs"


def test_a_killed_component_comes_back_with_its_command_environment_and_log(fleet):
    root = Path(fleet.state_dir)
    supervisor = Supervisor(root)
    assert supervisor.tick()
    assert load_restarts(root)["gpu-01-kwok"].count == 0

    kill(fleet.processes[0].pid)
    wait_dead(fleet)
    supervisor.tick()
    noticed = load_restarts(root)["gpu-01-kwok"]
    assert noticed.last_exit.startswith("exited (started before the supervisor")
    assert "its log ends: started with MARK=kept" in noticed.last_exit
    supervisor.tick()

    restarted = load_state(root).processes[0]
    assert restarted.pid != fleet.processes[0].pid
    assert is_running(restarted)
    assert restarted.command == fleet.processes[0].command
    assert restarted.env == {"MARK": "kept"}
    assert restarted.log == fleet.processes[0].log
    assert load_restarts(root)["gpu-01-kwok"].count == 1
    deadline = time.monotonic() + 5
    while Path(restarted.log).read_text().count("MARK=kept") < 2:
        assert time.monotonic() < deadline, "the log is appended to, not replaced"
        time.sleep(0.01)

    kill(restarted.pid)
    wait_dead(load_state(root))
    supervisor.tick()
    again = load_restarts(root)["gpu-01-kwok"]
    assert again.last_exit.startswith("killed by SIGKILL"), "its own child's end is known"
    supervisor.tick()
    assert load_restarts(root)["gpu-01-kwok"].count == 2


def test_a_component_of_a_cluster_stopped_on_purpose_stays_stopped(fleet):
    root = Path(fleet.state_dir)
    fleet.stopped_clusters.append("gpu-01")
    fleet.save()
    supervisor = Supervisor(root)
    kill(fleet.processes[0].pid)
    wait_dead(fleet)
    for _ in range(3):
        assert supervisor.tick()
    assert load_state(root).processes == fleet.processes
    assert load_restarts(root)["gpu-01-kwok"].count == 0


def test_the_supervisor_process_stops_on_sigterm_and_when_its_fleet_is_gone(fleet, tmp_path):
    root = Path(fleet.state_dir)
    command = [sys.executable, "-m", "fleet.devenv.supervisor", "--state-dir", str(root)]
    log = tmp_path / "supervisor.log"
    with log.open("ab") as output:
        running = subprocess.Popen([*command, "--interval", "0.1"], stderr=output)
    # Its handlers are in place once it says it supervises (a loaded machine starts it slowly).
    deadline = time.monotonic() + 30
    while "supervising" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    running.send_signal(signal.SIGTERM)
    assert running.wait(10) == 0
    assert "SIGTERM: stopping" in log.read_text()

    with log.open("ab") as output:
        orphan = subprocess.Popen([*command, "--interval", "0.1"], stderr=output)
    stop(fleet.processes, grace=1)
    shutil.rmtree(root / "logs")
    (root / "state.json").unlink()
    assert orphan.wait(10) == 0
    assert "no ready fleet" in log.read_text()


def test_status_exits_3_naming_what_is_dead_and_that_nothing_restarts_it(fleet):
    root = Path(fleet.state_dir)
    kill(fleet.processes[0].pid)
    wait_dead(fleet)
    result = CliRunner().invoke(cli, ["dev", "status", "--state-dir", str(root)])
    assert result.exit_code == 3
    header, row, _, note = result.stdout.splitlines()
    assert header.split() == STATUS_HEADER
    pid = str(fleet.processes[0].pid)
    assert row.split() == ["gpu-01-kwok", "kwok", "gpu-01", pid, "dead", "0", "-", "-"]
    assert note == "gpu-01-kwok: dead"

    missing = CliRunner().invoke(cli, ["dev", "status", "--state-dir", str(root / "none")])
    assert missing.exit_code == 3
    assert missing.stderr == (
        f"error: no local fleet is running from {root / 'none'}; start one with `fleet dev up`\n"
    )
