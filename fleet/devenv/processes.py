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
from dataclasses import asdict, dataclass, field
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
    # What was added to the starting process's environment, so a restart gets the same.
    env: dict[str, str] = field(default_factory=dict)

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
            env=data.get("env", {}),
        )


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on: [0] state, [1] parent, [3] session, [19]
    start time; None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return stat.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def is_running(record: ProcessRecord) -> bool:
    fields = _stat(record.pid)
    return fields is not None and int(fields[19]) == record.start_ticks and fields[0] != "Z"


def uptime(record: ProcessRecord) -> float:
    """Seconds since the recorded process started (whether or not it still runs)."""
    since_boot = float(Path("/proc/uptime").read_text().split()[0])
    return max(since_boot - record.start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)


def describe_exit(code: int) -> str:
    """A Popen return code in words: negative codes are the signal that ended it."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


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

    def returncode(self) -> int | None:
        """None while running; also reaps the child once it has exited."""
        return self._popen.poll()

    def exit_reason(self) -> str | None:
        """None while running; otherwise what it printed last, to put in an error."""
        code = self.returncode()
        if code is None:
            return None
        return f"{self.record.name} {describe_exit(code)}; {log_tail(Path(self.record.log))}"


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return f"no log at {log}"
    return f"last lines of {log}:\n" + "\n".join(text)


def last_line(log: Path, limit: int = 300) -> str:
    """The last non-empty line of a log (read from its end), shortened to `limit` characters."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(handle.seek(0, os.SEEK_END) - 8192, 0))
            tail = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


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
    return Process(
        popen, ProcessRecord(name, popen.pid, ticks, tuple(command), str(log), env or {})
    )


def restart(record: ProcessRecord) -> Process:
    """Start a recorded process again: same command line, environment and (appended) log."""
    return start(record.name, list(record.command), Path(record.log), record.env)


def using_files_under(root: Path) -> list[ProcessRecord]:
    """Session leaders whose command line names a file under `root` (a state directory),
    this process and its ancestors aside: what a start-up killed between starting a
    component (each in a session of its own) and recording it left behind. The state
    directory's path is unique to one fleet; a shell's `tail -f` of a log there leads no
    session, so it is never taken for one."""
    prefix = f"{root.resolve()}/".encode()
    spared, pid = set(), os.getpid()
    while pid > 1 and (fields := _stat(pid)) is not None:
        spared.add(pid)
        pid = int(fields[1])
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if not any(prefix in argument for argument in arguments):
            continue
        fields = _stat(int(entry.name))
        if fields is not None and int(fields[3]) == int(entry.name):
            command = tuple(a.decode(errors="replace") for a in arguments if a)
            found.append(ProcessRecord("unrecorded", int(entry.name), int(fields[19]), command, ""))
    return found


def stop(records: list[ProcessRecord], grace: float = STOP_GRACE_SECONDS) -> list[str]:
    """Stop the recorded processes (SIGTERM, then SIGKILL after `grace`).

    Returns the names of those that had to be killed. Each process leads its
    own session, so its whole process group is signalled.
    """
    running = [record for record in records if is_running(record)]
    for record in running:
        signal_group(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        _reap(running)
        running = [record for record in running if is_running(record)]
        time.sleep(0.05)
    for record in running:
        signal_group(record.pid, signal.SIGKILL)
    while any(is_running(record) for record in running):
        _reap(running)
        time.sleep(0.05)
    return [record.name for record in running]


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group `pid` leads (every process is started in its own session)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _reap(records: list[ProcessRecord]) -> None:
    """Collect exit statuses of our own children so they do not linger as zombies."""
    for record in records:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(record.pid, os.WNOHANG)
