"""One cluster, or one profile, as a tree: problems first, each problem also as fields.

Pure: `fleet describe` reads the Cluster (or the AddonProfile) and its
AddonDeployments from the management cluster and hands them here; the same
tree serves the terminal and `-o json|yaml`. Objects below an add-on are the
ones its status names as problems (not Ready, refused, in conflict); a healthy
add-on shows how many objects it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.fleetview import UNKNOWN, ClusterRow, cluster_problems, rows
from fleet.status import SEVERITY

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong, where it is: as fields, for scripts."""

    cluster: str  # namespace/name
    profile: str = ""
    addon: str = ""
    object: str = ""  # Kind namespace/name
    reason: str = ""
    message: str = ""

    def to_json(self) -> JSON:
        return {
            "cluster": self.cluster,
            "profile": self.profile,
            "addon": self.addon,
            "object": self.object,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class AddonNode:
    name: str
    phase: str
    revision: str
    last_change: str
    message: str
    objects: int | None
    problems: tuple[Problem, ...] = ()

    def to_json(self) -> JSON:
        return {
            "name": self.name,
            "phase": self.phase,
            "revision": self.revision,
            "lastTransitionTime": self.last_change,
            "message": self.message,
            "objects": self.objects,
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass(frozen=True, slots=True)
class DeploymentNode:
    """One AddonDeployment: a profile's add-ons on one cluster."""

    profile: str
    cluster: str  # namespace/name
    name: str
    phase: str
    ready: str
    message: str
    addons: tuple[AddonNode, ...]

    def to_json(self) -> JSON:
        return {
            "profile": self.profile,
            "cluster": self.cluster,
            "addonDeployment": self.name,
            "phase": self.phase,
            "ready": self.ready,
            "message": self.message,
            "addons": [a.to_json() for a in self.addons],
        }


@dataclass(frozen=True, slots=True)
class ClusterView:
    row: ClusterRow  # what `fleet status` shows of the cluster
    gpu_nodes: int | None
    deployments: tuple[DeploymentNode, ...]
    cluster_problems: tuple[Problem, ...] = ()

    @property
    def problems(self) -> list[Problem]:
        return [*self.cluster_problems, *_problems(self.deployments)]

    def to_json(self) -> JSON:
        return {
            "cluster": {
                "namespace": self.row.namespace,
                "name": self.row.name,
                "datacenter": self.row.datacenter,
                "phase": self.row.phase,
                "kubernetesVersion": self.row.kubernetes_version,
                "gpus": self.row.gpus,
                "gpuNodes": self.gpu_nodes,
            },
            "profiles": [d.to_json() for d in self.deployments],
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass(frozen=True, slots=True)
class ProfileView:
    namespace: str
    name: str
    addons: tuple[str, ...]
    selected: int
    deployments: tuple[DeploymentNode, ...] = field(default=())

    @property
    def problems(self) -> list[Problem]:
        return _problems(self.deployments)

    def to_json(self) -> JSON:
        return {
            "profile": {
                "namespace": self.namespace,
                "name": self.name,
                "addons": list(self.addons),
                "clusters": self.selected,
            },
            "clusters": [d.to_json() for d in self.deployments],
            "problems": [p.to_json() for p in self.problems],
        }


def severity(phase: str) -> int:
    """Higher is worse; a phase fleet does not know (no status yet) ranks with Pending."""
    return SEVERITY.index(phase) if phase in SEVERITY else SEVERITY.index("Pending")


def is_problem(phase: str) -> bool:
    return phase not in ("Ready", "Paused")


def _problems(deployments: tuple[DeploymentNode, ...]) -> list[Problem]:
    found = []
    for deployment in deployments:
        if not deployment.addons and is_problem(deployment.phase):
            found.append(
                Problem(
                    deployment.cluster,
                    deployment.profile,
                    reason=deployment.phase,
                    message=deployment.message,
                )
            )
        for addon in deployment.addons:
            if addon.problems:
                found.extend(addon.problems)
            elif is_problem(addon.phase):
                found.append(
                    Problem(
                        deployment.cluster,
                        deployment.profile,
                        addon.name,
                        reason=addon.phase,
                        message=addon.message,
                    )
                )
    return found


def deployment_node(body: JSON) -> DeploymentNode:
    meta, spec = body["metadata"], body.get("spec") or {}
    status = body.get("status") or {}
    cluster = f"{meta['namespace']}/{spec.get('cluster', '')}"
    profile = str(spec.get("profile", ""))
    addons = []
    for entry in status.get("addons") or []:
        if entry.get("name") == "*":  # a deployment-wide stop, told by the deployment itself
            continue
        problems = tuple(
            Problem(
                cluster,
                profile,
                entry["name"],
                str(p.get("object", "")),
                str(p.get("reason", "")),
                str(p.get("message", "")),
            )
            for p in entry.get("problems") or []
        )
        addons.append(
            AddonNode(
                name=entry["name"],
                phase=entry.get("phase") or UNKNOWN,
                revision=str(entry.get("appliedRevision") or "")[:12],
                last_change=str(entry.get("lastTransitionTime") or ""),
                message=str(entry.get("message") or ""),
                objects=entry.get("objects"),
                problems=problems,
            )
        )
    addons.sort(key=lambda a: (-severity(a.phase), a.name))
    phase = status.get("phase") or UNKNOWN
    message = status.get("message") or (
        "" if status.get("phase") else "the controller has not reported on it"
    )
    return DeploymentNode(
        profile=profile,
        cluster=cluster,
        name=meta["name"],
        phase=phase,
        ready=str(status.get("ready") or f"0/{len(addons)}"),
        message=str(message),
        addons=tuple(addons),
    )


def _ordered(nodes: list[DeploymentNode], key: str) -> tuple[DeploymentNode, ...]:
    return tuple(sorted(nodes, key=lambda d: (-severity(d.phase), getattr(d, key))))


def cluster_view(cluster: JSON, deployments: list[JSON]) -> ClusterView:
    """The cluster and the deployments of every profile on it, the worst first."""
    meta = cluster["metadata"]
    where = f"{meta['namespace']}/{meta['name']}"
    (row,) = rows([cluster], deployments)
    bodies = [
        d
        for d in deployments
        if (d.get("spec") or {}).get("cluster") == meta["name"]
        and d["metadata"]["namespace"] == meta["namespace"]
    ]
    seen = [(d.get("status") or {}).get("cluster") or {} for d in bodies]
    return ClusterView(
        row=row,
        gpu_nodes=next((s["gpuNodes"] for s in seen if "gpuNodes" in s), None),
        deployments=_ordered([deployment_node(d) for d in bodies], "profile"),
        cluster_problems=tuple(
            Problem(where, reason=reason, message=message)
            for reason, message in cluster_problems(cluster)
        ),
    )


def profile_view(profile: JSON, deployments: list[JSON]) -> ProfileView:
    """The profile and its deployment on every cluster it selects, the worst first."""
    meta = profile["metadata"]
    mine = [
        deployment_node(d)
        for d in deployments
        if (d.get("spec") or {}).get("profile") == meta["name"]
        and d["metadata"]["namespace"] == meta["namespace"]
    ]
    addons = tuple(str(a.get("name")) for a in (profile.get("spec") or {}).get("addons") or [])
    matched = (profile.get("status") or {}).get("matchedClusters")
    selected = len(matched) if isinstance(matched, list) else len(mine)
    return ProfileView(meta["namespace"], meta["name"], addons, selected, _ordered(mine, "cluster"))
