"""The local fleet's supervisor, run as `python -m fleet.devenv.supervisor --state-dir DIR`.

Real control planes outlive their components: a kubelet restarts a controller
manager that exits after losing its leader lease. `fleet dev up` starts this
process once the fleet is ready, detached and recorded like every other
process; it looks at every recorded component each second and starts a dead
one again with the same command line, environment and log, after the backoff
of `supervision.decide`. What it did is in restarts.json for `fleet dev
status`; what it says is in logs/supervisor.log. `fleet dev down` stops it
before anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType

from fleet.devenv import processes
from fleet.devenv.processes import ProcessRecord
from fleet.devenv.restarts import Restarts, load_restarts, save_restarts
from fleet.devenv.roles import SUPERVISOR, held
from fleet.devenv.state import FleetState, load_state, updating
from fleet.devenv.supervision import Action, decide, restart_failed
from fleet.errors import DevEnvError

POLL_SECONDS = 1.0

log = logging.getLogger("fleet.supervisor")


def command(state_dir: Path) -> list[str]:
    """How `up` starts the supervisor: with the interpreter that runs `up`."""
    return [sys.executable, "-m", "fleet.devenv.supervisor", "--state-dir", str(state_dir)]


class Supervisor:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.ledger = load_restarts(state_dir)
        # The processes this supervisor started, by pid: only a parent learns how a child ended.
        self.children: dict[int, processes.Process] = {}

    def tick(self) -> bool:
        """Look at every component once; False when there is no fleet left to supervise."""
        state = load_state(self.state_dir) if self.state_dir.exists() else None
        if state is None or not state.ready or self._another_supervisor(state):
            return False
        self._forget_children(state)
        now = time.time()
        ledger = dict(self.ledger)
        for record in state.processes:
            if record.name == SUPERVISOR:
                continue
            before = ledger.get(record.name, Restarts())
            decision = decide(
                before,
                pid=record.pid,
                running=processes.is_running(record),
                held=held(record.name, state.stopped_clusters),
                uptime=processes.uptime(record),
                now=now,
            )
            after = decision.restarts
            if decision.action is Action.DIED:
                after = replace(after, last_exit=self._exit_reason(record))
                log.warning(
                    "%s (pid %d) %s; restarting in %.0fs",
                    record.name,
                    record.pid,
                    after.last_exit,
                    (after.next_attempt or now) - now,
                )
            elif decision.action is Action.RESTART:
                after = self._restart(record, before, after, now)
            ledger[record.name] = after
        if ledger != self.ledger:
            save_restarts(self.state_dir, ledger)
            self.ledger = ledger
        return True

    def _another_supervisor(self, state: FleetState) -> bool:
        return any(
            record.name == SUPERVISOR and record.pid != os.getpid() and processes.is_running(record)
            for record in state.processes
        )

    def _forget_children(self, state: FleetState) -> None:
        """Reap children that exited and are no longer the recorded process of any component."""
        recorded = {record.pid for record in state.processes}
        for pid, child in list(self.children.items()):
            if child.returncode() is not None and pid not in recorded:
                del self.children[pid]

    def _exit_reason(self, record: ProcessRecord) -> str:
        child = self.children.pop(record.pid, None)
        code = child.returncode() if child else None
        how = (
            processes.describe_exit(code)
            if code is not None
            else "exited (started before the supervisor, so its exit status is unknown)"
        )
        last = processes.last_line(Path(record.log))
        return f"{how}; its log ends: {last}" if last else how

    def _restart(
        self, record: ProcessRecord, before: Restarts, after: Restarts, now: float
    ) -> Restarts:
        """Start the component again, unless someone else did or stopped its cluster meanwhile."""
        with updating(self.state_dir) as state:
            current = next((r for r in state.processes if r.name == record.name), None)
            if (
                current != record
                or processes.is_running(record)
                or held(record.name, state.stopped_clusters)
            ):
                return replace(before, next_attempt=None)
            try:
                process = processes.restart(record)
            except DevEnvError as error:
                log.error("%s could not be restarted: %s", record.name, error)
                return restart_failed(after, str(error), now)
            self.children[process.record.pid] = process
            state.processes = [
                process.record if r.name == record.name else r for r in state.processes
            ]
        log.warning(
            "restarted %s (pid %d, restart %d)", record.name, process.record.pid, after.count
        )
        return replace(after, pid=process.record.pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fleet.devenv.supervisor",
        description="Restart the local fleet's components that die (started by `fleet dev up`).",
    )
    parser.add_argument("--state-dir", type=Path, required=True, help="the fleet's state directory")
    parser.add_argument(
        "--interval", type=float, default=POLL_SECONDS, help="seconds between two looks"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    supervisor = Supervisor(args.state_dir)
    log.info("supervising the local fleet in %s every %.1fs", args.state_dir, args.interval)
    while not stopping.is_set():
        try:
            if not supervisor.tick():
                log.info("no ready fleet in %s any more: exiting", args.state_dir)
                break
        except (OSError, ValueError, DevEnvError):
            # A passing problem (a file replaced under us) must not end supervision.
            log.exception("supervision pass failed; trying again")
        stopping.wait(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
