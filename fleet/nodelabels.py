"""Labels an add-on keeps on a workload cluster's nodes (`spec.nodeLabels`).

Pure: nodes as the cluster lists them go in, the server-side applies that make
their labels right come out. An add-on owns its label keys through a field
manager of its own (one per ApplySet), so that it finds exactly the labels it
set, removes them when its declaration goes (applying an empty set is how
server-side apply gives fields up), and never touches any other label of a Node.
Nodes are never created or deleted: every apply carries the node's
resourceVersion, which the API server refuses on a create.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]
MANAGER_PREFIX = "fleet-labels-"


def manager(applyset: str) -> str:
    """The field manager of one add-on's node labels on one cluster."""
    return f"{MANAGER_PREFIX}{applyset}"


def owned_keys(node: JSON, field_manager: str) -> set[str]:
    """Label keys of `node` that `field_manager` owns (its managedFields entries)."""
    keys: set[str] = set()
    for entry in node.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") != field_manager:
            continue
        labels = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels") or {}
        keys |= {key.removeprefix("f:") for key in labels if key.startswith("f:")}
    return keys


def selected(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """matchLabels: every pair of `selector` is on the node (an empty selector takes all)."""
    return all(labels.get(key) == value for key, value in selector.items())


@dataclass(frozen=True, slots=True)
class NodeLabelling:
    """One server-side apply to one node: exactly these labels under the add-on's manager."""

    node: str
    resource_version: str
    labels: Mapping[str, str]

    def body(self) -> JSON:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "resourceVersion": self.resource_version,
                "labels": dict(self.labels),
            },
        }


def changes(
    nodes: Iterable[JSON],
    selector: Mapping[str, str],
    wanted: Mapping[str, str],
    field_manager: str,
) -> list[NodeLabelling]:
    """The applies that put `wanted` (empty values left out) on the selected nodes and take
    this manager's labels off every other node; nothing for a node already right."""
    target = {key: value for key, value in wanted.items() if value}
    found = []
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        meta = node["metadata"]
        labels = meta.get("labels") or {}
        mine = owned_keys(node, field_manager)
        should = target if selected(labels, selector) else {}
        has = {key: labels[key] for key in mine if key in labels}
        if has != should or mine != set(should):
            found.append(NodeLabelling(meta["name"], meta.get("resourceVersion", ""), should))
    return found


def labelled(nodes: Iterable[JSON], field_manager: str) -> list[str]:
    """Names of the nodes carrying labels of this manager."""
    return sorted(n["metadata"]["name"] for n in nodes if owned_keys(n, field_manager))
