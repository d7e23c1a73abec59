"""Which clusters a profile selects: Kubernetes LabelSelector semantics.

An empty selector selects every cluster, as in Kubernetes. Clusters that are
paused or whose control plane is not ready yet are matched but not eligible:
they get no add-ons until that changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fleet.api.models import Cluster
from fleet.errors import PermanentError

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class InvalidSelector(PermanentError):
    pass


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        if operator not in OPERATORS:
            raise InvalidSelector(
                f"matchExpressions operator {operator!r} is not one of {OPERATORS}"
            )
        if operator in ("In", "NotIn") and not values:
            raise InvalidSelector(f"matchExpressions {operator} on {key!r} needs values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def eligible(cluster: Cluster) -> bool:
    """A cluster receives add-ons once its control plane is ready, unless paused or going away."""
    return cluster.control_plane_ready and not cluster.paused and not cluster.deleting


def select(selector: Mapping[str, Any], clusters: Iterable[Cluster]) -> list[Cluster]:
    """The eligible clusters the selector matches, sorted by name."""
    return sorted(
        (c for c in clusters if eligible(c) and matches(selector, c.labels)),
        key=lambda c: c.name,
    )
