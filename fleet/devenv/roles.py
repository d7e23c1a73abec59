"""Which role and cluster a process of the local fleet has, read from the name `up` gave it.

Kept apart, with no imports, so that the supervisor (which loads it) stays small.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

SUPERVISOR = "supervisor"
# Starts a workload plane for each Cluster declared from a ClusterClass (`fleet apply`).
PROVIDER = "provider"
CONTROLLER = "controller"
MANAGEMENT = "management"
APISERVER = "apiserver"
PLANE_ROLES = (APISERVER, "controller-manager", "scheduler", "kwok")


@dataclass(frozen=True, slots=True)
class Identity:
    role: str
    cluster: str  # the plane it belongs to; "" for the parts every plane shares


def identify(name: str) -> Identity:
    """Role and cluster of a component, from its name (`gpu-01-scheduler`)."""
    for role in PLANE_ROLES:
        if name.endswith(f"-{role}"):
            return Identity(role, name.removesuffix(f"-{role}"))
    if name.startswith("registry-"):
        return Identity("registry", "")
    if name.startswith("prometheus-"):
        return Identity("prometheus", "")
    if name == CONTROLLER:
        return Identity(CONTROLLER, MANAGEMENT)
    return Identity(name, "")


def held(name: str, stopped_clusters: Collection[str]) -> bool:
    """Whether the component belongs to a cluster stopped on purpose (`fleet dev stop`)."""
    cluster = identify(name).cluster
    return bool(cluster) and cluster in stopped_clusters
