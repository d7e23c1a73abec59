"""The fleet at a glance: one row per Cluster, from management-cluster objects only.

Pure: `fleet status` fetches Clusters and AddonDeployments and hands them
here; the same rows serve the table and `-o json`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fleet.api import LABEL_DATACENTER
from fleet.api.models import parse_cluster
from fleet.status import READY

JSON = dict[str, Any]
GPU_COUNT_LABEL = "fleet.mlops.dev/gpu-count"


@dataclass(frozen=True, slots=True)
class ClusterRow:
    namespace: str
    name: str
    datacenter: str
    phase: str
    kubernetes_version: str
    gpus: int | None
    addons_ready: int
    addons_total: int
    problems: tuple[str, ...]

    def to_json(self) -> JSON:
        """camelCase keys, as every Kubernetes-facing JSON output."""
        data = asdict(self)
        data["problems"] = list(self.problems)
        return {_camel(key): value for key, value in data.items()}


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def _cluster_problems(body: JSON) -> list[str]:
    cluster = parse_cluster(body)
    problems = []
    if cluster.deleting:
        problems.append("being deleted")
    if cluster.paused:
        problems.append("paused: no add-ons are applied")
    if not cluster.control_plane_ready:
        problems.append("control plane not ready")
    return problems


def rows(clusters: list[JSON], deployments: list[JSON]) -> list[ClusterRow]:
    by_cluster: dict[tuple[str, str], list[JSON]] = {}
    for deployment in deployments:
        key = (deployment["metadata"]["namespace"], deployment["spec"]["cluster"])
        by_cluster.setdefault(key, []).append(deployment)
    result = []
    for body in sorted(clusters, key=lambda c: (c["metadata"]["namespace"], c["metadata"]["name"])):
        meta = body["metadata"]
        mine = sorted(
            by_cluster.get((meta["namespace"], meta["name"]), []),
            key=lambda d: d["spec"]["profile"],
        )
        statuses = [d.get("status") or {} for d in mine]
        seen = [s.get("cluster") or {} for s in statuses]
        addons = [a for s in statuses for a in s.get("addons") or []]
        topology_version = ((body.get("spec") or {}).get("topology") or {}).get("version", "")
        versions = [v["kubernetesVersion"] for v in seen if v.get("kubernetesVersion")]
        gpus = next((v["gpus"] for v in seen if "gpus" in v), None)
        if gpus is None and GPU_COUNT_LABEL in (meta.get("labels") or {}):
            gpus = int(meta["labels"][GPU_COUNT_LABEL])
        problems = _cluster_problems(body) + [
            f"{d['spec']['profile']}: {s.get('phase')}: {s.get('message') or 'no message'}"
            for d, s in zip(mine, statuses, strict=True)
            if s.get("phase") not in (READY, None)
        ]
        result.append(
            ClusterRow(
                namespace=meta["namespace"],
                name=meta["name"],
                datacenter=(meta.get("labels") or {}).get(LABEL_DATACENTER, ""),
                phase=(body.get("status") or {}).get("phase", "Unknown"),
                kubernetes_version=topology_version or (versions[0] if versions else ""),
                gpus=gpus,
                addons_ready=sum(a.get("phase") == READY for a in addons),
                addons_total=len(addons),
                problems=tuple(problems),
            )
        )
    return result
