"""The fleet at a glance: one row per Cluster, and the controller's heartbeat.

Pure: `fleet status` fetches Clusters, AddonDeployments and the controller's
Lease and hands them here; the same rows and notes serve the table and
`-o json`.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass, fields
from typing import Any

from fleet.api import LABEL_DATACENTER, LABEL_GPU_COUNT
from fleet.api.models import parse_cluster
from fleet.gpu import declared_gpus, declared_offer, offer_line, reported_offer
from fleet.status import PAUSED, READY

JSON = dict[str, Any]
# A deployment the controller has not written a phase on yet.
UNKNOWN = "Unknown"
# PAUSED is set by the controller on the deployments of a paused Cluster; the
# cluster's own "paused" problem already says so, so it adds none.
NOT_PROBLEMS = (READY, PAUSED)
# client-go's leader-election lease duration, for a Lease that does not say its own.
DEFAULT_LEASE_SECONDS = 15
# A heartbeat is missed once the Lease has gone unrenewed this many lease durations.
MISSED_LEASES = 2


@dataclass(frozen=True, slots=True)
class ClusterRow:
    namespace: str
    name: str
    datacenter: str
    phase: str
    kubernetes_version: str
    gpus: int | None
    # What the cluster offers as declared, and what its nodes report when they differ.
    gpu_offer: str
    addons_ready: int
    addons_total: int
    problems: tuple[str, ...]

    def to_json(self) -> JSON:
        """camelCase keys, as every Kubernetes-facing JSON output."""
        data = _to_json(self)
        data["problems"] = list(self.problems)
        return data


def _to_json(row: ClusterRow | Heartbeat) -> JSON:
    """Fields under camelCase keys, without the deep copies that make `asdict` 4x slower."""
    return {_camel(field.name): getattr(row, field.name) for field in fields(row)}


@functools.cache
def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def cluster_problems(body: JSON) -> list[tuple[str, str]]:
    """(reason, message) of each thing that keeps a Cluster from its add-ons."""
    cluster = parse_cluster(body)
    problems = []
    if cluster.deleting:
        problems.append(("Deleting", "being deleted"))
    if cluster.paused:
        problems.append(("Paused", "paused: no add-ons are applied"))
    if not cluster.control_plane_ready:
        problems.append(("NotReady", "control plane not ready"))
    return problems


def _deployment_problem(profile: str, status: JSON) -> str:
    if not status.get("phase"):
        return f"{profile}: {UNKNOWN}: the controller has not reported on it"
    return f"{profile}: {status['phase']}: {status.get('message') or 'no message'}"


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
        labels = meta.get("labels") or {}
        if gpus is None and labels.get(LABEL_GPU_COUNT, "").isdigit():
            gpus = int(labels[LABEL_GPU_COUNT])
        reported = next((reported_offer(v) for v in seen if "gpus" in v), "")
        problems = [message for _, message in cluster_problems(body)] + [
            _deployment_problem(d["spec"]["profile"], s)
            for d, s in zip(mine, statuses, strict=True)
            if s.get("phase") not in NOT_PROBLEMS
        ]
        result.append(
            ClusterRow(
                namespace=meta["namespace"],
                name=meta["name"],
                datacenter=(meta.get("labels") or {}).get(LABEL_DATACENTER, ""),
                phase=(body.get("status") or {}).get("phase", "Unknown"),
                kubernetes_version=topology_version or (versions[0] if versions else ""),
                gpus=gpus,
                gpu_offer=offer_line(declared_offer(declared_gpus(labels)), reported),
                addons_ready=sum(a.get("phase") == READY for a in addons),
                addons_total=len(addons),
                problems=tuple(problems),
            )
        )
    return result


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What the controller's Lease says of it; `note` is set when that is bad news."""

    lease: str
    holder: str | None = None
    renew_time: str | None = None
    age_seconds: int | None = None
    # None: the Lease could not be read, so nothing is known either way.
    healthy: bool | None = None
    note: str | None = None

    def to_json(self) -> JSON:
        return _to_json(self)


def heartbeat(lease: JSON | None, moment: datetime.datetime, where: str) -> Heartbeat:
    """The controller's health from its Lease `where` (namespace/name) at `moment`."""
    if lease is None:
        return Heartbeat(
            where, healthy=False, note=f"no fleet controller has reported: no Lease {where}"
        )
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or None
    renew_time = spec.get("renewTime") or None
    if holder is None or renew_time is None:
        return Heartbeat(
            where,
            holder,
            renew_time,
            healthy=False,
            note=f"no fleet controller holds Lease {where}",
        )
    renewed = datetime.datetime.fromisoformat(renew_time)
    age = max(0, int((moment - renewed).total_seconds()))
    limit = MISSED_LEASES * int(spec.get("leaseDurationSeconds") or DEFAULT_LEASE_SECONDS)
    if age > limit:
        return Heartbeat(
            where,
            holder,
            renew_time,
            age,
            healthy=False,
            note=f"the fleet controller has not reported for {age} s "
            f"(Lease {where}, holder {holder})",
        )
    return Heartbeat(where, holder, renew_time, age, healthy=True)


def unread_heartbeat(where: str, reason: str) -> Heartbeat:
    return Heartbeat(
        where, note=f"cannot read Lease {where}, the controller's health is unknown: {reason}"
    )
