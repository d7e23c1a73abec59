"""Start, identify and stop the local fleet's processes.

`fleet dev up` returns while the fleet keeps running, so every process is
started in a session of its own and recorded in the state file with its pid
and kernel start time. `fleet dev down` (or the next `up` on the same state
directory, after a crash) stops exactly those processes and never a stranger
that happens to reuse a pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fleet.errors import DevEnvError

STOP_GRACE_SECONDS = 10.0
LOG_TAIL_LINES = 25


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int
    command: tuple[str, ...]
    log: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessRecord:
        return cls(
            name=data["name"],
            pid=data["pid"],
            start_ticks=data["start_ticks"],
            command=tuple(data["command"]),
            log=data["log"],
        )


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def is_running(record: ProcessRecord) -> bool:
    ticks = start_ticks(record.pid)
    if ticks != record.start_ticks:
        return False
    state = Path(f"/proc/{record.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


class PortAllocator:
    """Free TCP ports on 127.0.0.1, never the same one twice in one run."""

    def __init__(self) -> None:
        self._given: set[int] = set()

    def take(self) -> int:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            if port not in self._given:
                self._given.add(port)
                return port


class Process:
    """A started child: its record, and a way to tell whether it died early."""

    def __init__(self, popen: subprocess.Popen[bytes], record: ProcessRecord) -> None:
        self._popen = popen
        self.record = record

    def exit_reason(self) -> str | None:
        """None while running; otherwise what it printed last, to put in an error."""
        code = self._popen.poll()
        if code is None:
            return None
        return f"{self.record.name} exited with code {code}; {log_tail(Path(self.record.log))}"


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return f"no log at {log}"
    return f"last lines of {log}:\n" + "\n".join(text)


def start(name: str, command: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
    binary = Path(command[0])
    if not binary.exists():
        raise DevEnvError(f"cannot start {name}: {binary} does not exist (run `fleet dev build`)")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    ticks = start_ticks(popen.pid)
    if ticks is None:
        raise DevEnvError(f"{name} exited at once; {log_tail(log)}")
    return Process(popen, ProcessRecord(name, popen.pid, ticks, tuple(command), str(log)))


def stop(records: list[ProcessRecord], grace: float = STOP_GRACE_SECONDS) -> list[str]:
    """Stop the recorded processes (SIGTERM, then SIGKILL after `grace`).

    Returns the names of those that had to be killed. Each process leads its
    own session, so its whole process group is signalled.
    """
    running = [record for record in records if is_running(record)]
    for record in running:
        _signal_group(record, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        _reap(running)
        running = [record for record in running if is_running(record)]
        time.sleep(0.05)
    for record in running:
        _signal_group(record, signal.SIGKILL)
    while any(is_running(record) for record in running):
        _reap(running)
        time.sleep(0.05)
    return [record.name for record in running]


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    try:
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(record.pid, sig)


def _reap(records: list[ProcessRecord]) -> None:
    """Collect exit statuses of our own children so they do not linger as zombies."""
    for record in records:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(record.pid, os.WNOHANG)
