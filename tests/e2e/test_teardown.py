"""Nothing outlives the local fleet: not after `down`, Ctrl-C, nor a killed `up`.

Each test runs its own one-cluster fleet in its own state directory.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.devenv import localfleet
from fleet.devenv.processes import is_running, using_files_under
from fleet.devenv.state import FleetState, load_state
from fleet.devenv.toolchain import Toolchain, ensure_toolchain
from fleet.devenv.topology import plan_fleet
from fleet.errors import DevEnvError

from .conftest import fleet_cli

LISTEN = "0A"
UP_ONE_CLUSTER = ("dev", "up", "--clusters", "1", "--datacenters", "1")


def listening_sockets() -> list[tuple[str, int, str]]:
    """(hex address, port, socket inode) of every TCP socket in LISTEN state."""
    sockets = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN:
                address, port = fields[1].rsplit(":", 1)
                sockets.append((address, int(port, 16), fields[9]))
    return sockets


def socket_inodes(pids: list[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            links = [str(fd.readlink()) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except (FileNotFoundError, PermissionError):
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    return inodes


def test_down_leaves_no_process_and_no_listening_port(tmp_path):
    state_dir = tmp_path / "fleet"
    started = fleet_cli(*UP_ONE_CLUSTER, "--state-dir", str(state_dir), "-o", "json")
    assert started.returncode == 0, started.stderr
    state = load_state(state_dir)
    pids = [record.pid for record in state.processes]
    ours = socket_inodes(pids)
    sockets = [(address, port) for address, port, inode in listening_sockets() if inode in ours]
    ports = {port for _, port in sockets}
    api_ports = {
        int(state.management_server.rsplit(":", 1)[1]),
        int(state.clusters[0].server.rsplit(":", 1)[1]),
    }
    assert api_ports <= ports
    assert {address for address, _ in sockets} == {"0100007F"}, "127.0.0.1 only"

    stopped = fleet_cli("dev", "down", "--state-dir", str(state_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == f"stopped {len(pids)} processes; {state_dir} removed\n"
    assert not any(is_running(record) for record in state.processes)
    assert not ports & {port for _, port, _ in listening_sockets()}
    assert not state_dir.exists()


def start_up_in_background(state_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fleet", *UP_ONE_CLUSTER, "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_processes(state_dir: Path, count: int) -> FleetState:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = load_state(state_dir) if (state_dir / "state.json").exists() else None
        if state and len(state.processes) >= count:
            return state
        time.sleep(0.1)
    raise AssertionError(f"`fleet dev up` did not start {count} processes in 60s")


def test_ctrl_c_during_up_stops_everything_it_started(tmp_path):
    state_dir = tmp_path / "fleet"
    up = start_up_in_background(state_dir)
    # Early (etcd and the registries), so that the signal surely lands while `up` still runs.
    wait_for_processes(state_dir, 2)
    up.send_signal(signal.SIGINT)
    _, stderr = up.communicate(timeout=60)
    assert up.returncode == 130
    assert "error: interrupted; every process started so far was stopped" in stderr
    state = load_state(state_dir)
    assert len(state.processes) >= 2
    assert not any(is_running(record) for record in state.processes)


def test_down_stops_what_a_killed_up_left_behind(tmp_path):
    state_dir = tmp_path / "fleet"
    up = start_up_in_background(state_dir)
    wait_for_processes(state_dir, 4)
    up.kill()
    up.wait()
    state = load_state(state_dir)
    orphans = [record for record in state.processes if is_running(record)]
    assert orphans, "the fleet's processes run detached, so they outlive a killed `up`"

    stopped = fleet_cli("dev", "down", "--state-dir", str(state_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert not state_dir.exists()
    assert not any(is_running(record) for record in state.processes)
    # Not even a component `up` started and was killed before it could record.
    assert using_files_under(state_dir) == []


def test_a_component_dying_at_start_is_named_with_its_log_and_nothing_is_left(tmp_path):
    broken = tmp_path / "bin" / "kube-apiserver"
    broken.parent.mkdir()
    broken.write_text(
        "#!/bin/sh\necho 'listen tcp 127.0.0.1:6443: bind: address already in use'\nexit 1\n"
    )
    broken.chmod(0o755)
    real = ensure_toolchain()
    toolchain = Toolchain(
        binaries={**real.binaries, "kube-apiserver": broken},
        versions=real.versions,
        assets=real.assets,
    )
    state_dir = tmp_path / "fleet"
    with pytest.raises(DevEnvError) as error:
        localfleet.up(state_dir, plan_fleet(1, 1), toolchain=toolchain)
    message = str(error.value)
    assert "exited with code 1" in message
    assert "-apiserver.log" in message
    assert "bind: address already in use" in message
    state = load_state(state_dir)
    assert {"etcd", "registry-dc-1"} <= {record.name for record in state.processes}
    assert not any(is_running(record) for record in state.processes)
