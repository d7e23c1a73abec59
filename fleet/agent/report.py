"""What a node agent decides and says, apart from doing it: pure.

Which of the cluster's models this node should hold (`wanted`), which models
running pods on the node use (`in_use`), the Node patch that says which models are
ready here (`node_patch`), and when a model that failed is tried again (`backoff`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from fleet.nodecache import (
    READY,
    READY_LABEL_PREFIX,
    STATUS_ANNOTATION,
    Assignment,
    ready_label,
    wants,
)

JSON = dict[str, Any]
USE_ANNOTATION = "models.fleet.mlops.dev/use"
FIRST_RETRY_SECONDS = 10.0
LAST_RETRY_SECONDS = 300.0
FINISHED = ("Succeeded", "Failed")


def wanted(
    assignments: Mapping[str, Assignment], node_labels: Mapping[str, str], *, every: bool
) -> dict[str, Assignment]:
    """The assignments this node should hold: those whose node selector its labels
    match, or all of them for a shared volume (`every`)."""
    return {
        name: found for name, found in assignments.items() if every or wants(found, node_labels)
    }


def in_use(pods: Iterable[JSON]) -> set[str]:
    """Models named by pods that have not finished (a pending pod may be about to
    mount one: it counts)."""
    used: set[str] = set()
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in FINISHED:
            continue
        text = ((pod.get("metadata") or {}).get("annotations") or {}).get(USE_ANNOTATION, "")
        used.update(n.strip() for n in text.split(",") if n.strip())
    return used


def node_patch(node: JSON, ready: Iterable[str], status: JSON) -> JSON | None:
    """The merge patch that makes the Node's model labels exactly the `ready` models and
    its status annotation `status`; None when it already says so. Labels of other
    prefixes are never touched."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    current = {k for k, v in labels.items() if k.startswith(READY_LABEL_PREFIX) and v == READY}
    wanted_labels = {ready_label(name) for name in ready}
    ours = {k for k in labels if k.startswith(READY_LABEL_PREFIX)}
    changes: dict[str, str | None] = {k: None for k in ours - wanted_labels}
    changes |= {k: READY for k in wanted_labels - current}
    text = json.dumps(status, sort_keys=True, separators=(",", ":"))
    before = (meta.get("annotations") or {}).get(STATUS_ANNOTATION)
    if not changes and _same(before, status):
        return None
    return {"metadata": {"labels": changes, "annotations": {STATUS_ANNOTATION: text}}}


def _same(before: str | None, status: JSON) -> bool:
    """Equal but for when it was written."""
    if not before:
        return False
    try:
        old = json.loads(before)
    except ValueError:
        return False
    if not isinstance(old, dict):
        return False
    strip = ("updated",)
    return {k: v for k, v in old.items() if k not in strip} == {
        k: v for k, v in status.items() if k not in strip
    }


def backoff(failures: int) -> float:
    """Seconds before a model that failed `failures` times in a row is tried again."""
    exponent = min(max(0, failures - 1), 16)  # capped: 2**16 * 10 s is past the last anyway
    return float(min(LAST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2**exponent))
