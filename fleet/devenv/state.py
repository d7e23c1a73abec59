"""The state file of a local fleet: what runs, where, and how to reach it.

Written after every started process, so a crash part-way through `up` still
leaves `down` (or the next `up`) enough to stop everything. Once the fleet is
up, the supervisor and the `fleet dev` commands both change it, so each
read-change-write happens under `updating()`'s lock.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleet.devenv.processes import ProcessRecord
from fleet.errors import DevEnvError

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
FORMAT = 1


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    name: str
    datacenter: str
    server: str
    kubeconfig: str
    gpu_product: str
    gpus_per_node: int
    gpu_nodes: int
    cpu_nodes: int


@dataclass(frozen=True, slots=True)
class DatacenterInfo:
    name: str
    registry: str
    registry_ca: str
    # https URL of the datacenter's Prometheus (its CA is registry_ca's).
    prometheus: str = ""
    # The registry is a pull-through cache of the fleet's hub registry (`--pull-through`).
    pull_through: bool = False


@dataclass(slots=True)
class FleetState:
    state_dir: str
    namespace: str = ""
    management_server: str = ""
    management_kubeconfig: str = ""
    clusters: list[ClusterInfo] = field(default_factory=list)
    datacenters: list[DatacenterInfo] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    ready: bool = False
    startup_seconds: float = 0.0
    controller_metrics: str = ""
    # Workload clusters stopped with `fleet dev stop`: the supervisor leaves them alone.
    stopped_clusters: list[str] = field(default_factory=list)
    # host:port of the model hub registry the datacenter registries proxy ("": none)
    hub_registry: str = ""
    # Workload clusters the local provider made for declared Clusters (`fleet apply`).
    provisioned: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / STATE_FILE

    def cluster(self, name: str) -> ClusterInfo:
        for info in self.clusters:
            if info.name == name:
                return info
        known = ", ".join(info.name for info in self.clusters) or "none"
        raise DevEnvError(f"no cluster named {name!r} in the local fleet (clusters: {known})")

    def kubeconfig(self, cluster: str | None = None) -> str:
        """The admin kubeconfig of `cluster`, or of the management cluster."""
        return self.cluster(cluster).kubeconfig if cluster else self.management_kubeconfig

    def save(self) -> None:
        data: dict[str, Any] = asdict(self)
        data["format"] = FORMAT
        data["processes"] = [record.to_json() for record in self.processes]
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(data, indent=2))
        partial.rename(self.path)


def load_state(state_dir: Path) -> FleetState | None:
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DevEnvError(f"{path} is not valid JSON ({error}); remove the directory") from error
    if data.get("format") != FORMAT:
        raise DevEnvError(f"{path} has format {data.get('format')}, expected {FORMAT}")
    return FleetState(
        state_dir=data["state_dir"],
        namespace=data["namespace"],
        management_server=data["management_server"],
        management_kubeconfig=data["management_kubeconfig"],
        clusters=[ClusterInfo(**item) for item in data["clusters"]],
        datacenters=[DatacenterInfo(**item) for item in data["datacenters"]],
        processes=[ProcessRecord.from_json(item) for item in data["processes"]],
        versions=data["versions"],
        ready=data["ready"],
        startup_seconds=data["startup_seconds"],
        controller_metrics=data.get("controller_metrics", ""),
        stopped_clusters=data.get("stopped_clusters", []),
        hub_registry=data.get("hub_registry", ""),
        provisioned=data.get("provisioned", []),
    )


@contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Hold the state directory's lock: one reader-changer-writer of state.json at a time."""
    with (state_dir / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def updating(state_dir: Path) -> Iterator[FleetState]:
    """The fleet's state, read under the lock and saved when the block ends without error."""
    with locked(state_dir):
        state = load_state(state_dir)
        if state is None:
            raise DevEnvError(f"no local fleet in {state_dir}: {STATE_FILE} is gone")
        yield state
        state.save()
