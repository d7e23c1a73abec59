"""What each recorded process of the local fleet is, and how it is doing.

The rows of `fleet dev status` are decided by `statuses()` from what was
observed (`observe()`, the only part that looks at processes and API servers),
the supervisor's restart record and the clusters stopped on purpose.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.devenv import processes
from fleet.devenv.controlplane import recorded_plane
from fleet.devenv.kubeapi import KubeAPI
from fleet.devenv.processes import ProcessRecord
from fleet.devenv.restarts import Restarts
from fleet.devenv.roles import APISERVER, MANAGEMENT, SUPERVISOR, held, identify
from fleet.devenv.state import FleetState

READYZ_TIMEOUT = 2.0

RUNNING, STOPPED, RESTARTING, DEAD = "running", "stopped on purpose", "restarting", "dead"


@dataclass(frozen=True, slots=True)
class Observed:
    running: bool
    uptime: float  # seconds since the recorded process started
    ready: bool | None = None  # /readyz answered, for API servers only


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    role: str
    cluster: str
    pid: int
    state: str
    restarts: int
    uptime: float | None  # None unless running
    ready: bool | None
    last_restart: float | None
    last_exit: str
    next_restart: float | None  # when a restarting component is due

    @property
    def fine(self) -> bool:
        """Running, or not wanted: stopped on purpose."""
        return self.state in (RUNNING, STOPPED)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "cluster": self.cluster or None,
            "pid": self.pid,
            "state": self.state,
            "restarts": self.restarts,
            "uptimeSeconds": None if self.uptime is None else round(self.uptime),
            "ready": self.ready,
            "lastRestart": _stamp(self.last_restart),
            "lastExit": self.last_exit or None,
            "nextRestart": _stamp(self.next_restart),
        }


def _stamp(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def statuses(
    records: Sequence[ProcessRecord],
    observed: Mapping[str, Observed],
    ledger: Mapping[str, Restarts],
    stopped_clusters: Collection[str],
) -> list[ComponentStatus]:
    """One status per recorded component, in the order `up` started them."""
    supervisor = observed.get(SUPERVISOR)
    supervised = supervisor is not None and supervisor.running
    result = []
    for record in records:
        seen = observed[record.name]
        restarts = ledger.get(record.name, Restarts())
        if seen.running:
            state = RUNNING
        elif held(record.name, stopped_clusters):
            state = STOPPED
        elif supervised and record.name != SUPERVISOR:
            state = RESTARTING
        else:
            state = DEAD
        identity = identify(record.name)
        result.append(
            ComponentStatus(
                name=record.name,
                role=identity.role,
                cluster=identity.cluster,
                pid=record.pid,
                state=state,
                restarts=restarts.count,
                uptime=seen.uptime if seen.running else None,
                ready=seen.ready,
                last_restart=restarts.last_restart,
                last_exit=restarts.last_exit,
                next_restart=restarts.next_attempt if state == RESTARTING else None,
            )
        )
    return result


def observe(state: FleetState) -> dict[str, Observed]:
    """Whether each recorded process runs, since when, and whether each API server is ready."""
    servers = {MANAGEMENT: state.management_server} | {c.name: c.server for c in state.clusters}
    found = {}
    for record in state.processes:
        running = processes.is_running(record)
        identity = identify(record.name)
        ready = None
        if identity.role == APISERVER:
            ready = running and _ready(Path(state.state_dir), identity.cluster, servers)
        found[record.name] = Observed(running, processes.uptime(record), ready)
    return found


def _ready(state_dir: Path, plane: str, servers: Mapping[str, str]) -> bool:
    if plane not in servers:
        return False
    files = recorded_plane(state_dir, plane, servers[plane])
    return KubeAPI(files.admin_credentials, timeout=READYZ_TIMEOUT).healthy()
