"""The state file of a local fleet: what runs, where, and how to reach it.

Written after every started process, so a crash part-way through `up` still
leaves `down` (or the next `up`) enough to stop everything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleet.devenv.processes import ProcessRecord
from fleet.errors import DevEnvError

STATE_FILE = "state.json"
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
    )
