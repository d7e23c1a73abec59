import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from fleet.devenv.processes import (
    PortAllocator,
    ProcessRecord,
    is_running,
    start,
    stop,
    using_files_under,
)
from fleet.devenv.state import ClusterInfo, FleetState, load_state

SLEEP = shutil.which("sleep")


def test_started_process_is_recorded_and_stopped(tmp_path):
    process = start("sleeper", [SLEEP, "300"], tmp_path / "sleeper.log")
    assert is_running(process.record)
    assert process.exit_reason() is None
    assert stop([process.record]) == []
    assert not is_running(process.record)


def test_process_ignoring_sigterm_is_killed(tmp_path):
    script = tmp_path / "stubborn.sh"
    trapped = tmp_path / "trapped"
    script.write_text(f"#!/bin/sh\ntrap '' TERM\ntouch {trapped}\nwhile :; do sleep 1; done\n")
    script.chmod(0o755)
    process = start("stubborn", [str(script)], tmp_path / "stubborn.log")
    deadline = time.monotonic() + 10
    while not trapped.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stop([process.record], grace=0.5) == ["stubborn"]
    assert not is_running(process.record)


def test_a_reused_pid_is_never_taken_for_ours(tmp_path):
    stranger = subprocess.Popen([SLEEP, "300"])
    try:
        record = ProcessRecord("old", stranger.pid, start_ticks=1, command=("x",), log="x")
        assert not is_running(record)
        stop([record], grace=0.1)
        assert stranger.poll() is None
    finally:
        stranger.send_signal(signal.SIGKILL)
        stranger.wait()


def test_exit_reason_quotes_the_log(tmp_path):
    process = start(
        "failing",
        ["/bin/sh", "-c", "echo 'bind: address already in use'; exit 3"],
        tmp_path / "failing.log",
    )
    process._popen.wait()
    reason = process.exit_reason()
    assert reason.startswith("failing exited with code 3;")
    assert "bind: address already in use" in reason


def test_ports_are_not_handed_out_twice():
    ports = PortAllocator()
    taken = [ports.take() for _ in range(50)]
    assert len(set(taken)) == 50


def test_state_round_trips(tmp_path):
    state = FleetState(
        state_dir=str(tmp_path),
        namespace="fleet-clusters",
        ready=True,
        clusters=[ClusterInfo("gpu-01", "dc-1", "https://127.0.0.1:1", "k", "T4", 2, 2, 1)],
        processes=[ProcessRecord("etcd", 1, 2, ("etcd",), "etcd.log")],
    )
    state.save()
    assert load_state(Path(tmp_path)) == state


def test_unrecorded_session_leaders_using_a_state_directory_are_found(tmp_path):
    marker = str(tmp_path / "fleet" / "planes" / "gpu-01" / "pki")
    command = [sys.executable, "-c", "import time; time.sleep(60)", marker]
    leader = subprocess.Popen(command, start_new_session=True)
    follower = subprocess.Popen(command)  # like a shell's `tail -f` of a log: no session
    try:
        found = using_files_under(tmp_path / "fleet")
        assert [record.pid for record in found] == [leader.pid]
        assert using_files_under(tmp_path / "elsewhere") == []
        stop(found)
        assert leader.wait(5) is not None
    finally:
        for process in (leader, follower):
            process.kill()
            process.wait()
