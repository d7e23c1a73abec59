"""In which order things happen: objects within an add-on, add-ons within a profile.

Objects apply as lightkube and Helm order them (CRDs and namespaces first,
webhooks last) and are deleted in reverse. Add-ons follow their dependsOn
edges; a cycle is a permanent error that names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fleet.api.models import AddonEntry
from fleet.errors import PermanentError

APPLY_ORDER = (
    "CustomResourceDefinition",
    "Namespace",
    "PriorityClass",
    "ResourceQuota",
    "LimitRange",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Deployment",
    "StatefulSet",
    "Job",
    "CronJob",
)
# Webhooks go last on apply and first on delete: a webhook whose backend is
# not up yet (or already gone) must not block the add-on's own objects.
LAST = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")


class DependencyCycle(PermanentError):
    pass


def apply_rank(kind: str) -> int:
    if kind in LAST:
        return len(APPLY_ORDER) + 1 + LAST.index(kind)
    return APPLY_ORDER.index(kind) if kind in APPLY_ORDER else len(APPLY_ORDER)


def apply_sorted(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(obj: dict[str, Any]) -> tuple[int, str, str]:
        meta = obj.get("metadata", {})
        return apply_rank(obj.get("kind", "")), meta.get("namespace", ""), meta.get("name", "")

    return sorted(objects, key=key)


def delete_sorted(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(reversed(apply_sorted(objects)))


def dependency_order(entries: Sequence[AddonEntry]) -> list[AddonEntry]:
    """Add-ons with every dependency before its dependents; ties keep the profile's order."""
    by_name = {entry.name: entry for entry in entries}
    ordered: list[AddonEntry] = []
    state: dict[str, str] = {}

    def visit(entry: AddonEntry, path: tuple[str, ...]) -> None:
        if state.get(entry.name) == "done":
            return
        if state.get(entry.name) == "visiting":
            cycle = " -> ".join((*path[path.index(entry.name) :], entry.name))
            raise DependencyCycle(f"add-ons depend on each other in a cycle: {cycle}")
        state[entry.name] = "visiting"
        for dependency in entry.depends_on:
            visit(by_name[dependency], (*path, entry.name))
        state[entry.name] = "done"
        ordered.append(entry)

    for entry in entries:
        visit(entry, ())
    return ordered
