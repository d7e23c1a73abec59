"""The contract between the controller, the node agents and the webhook: pure.

The controller tells each workload cluster which models it has in one ConfigMap,
`fleet-system/fleet-models`: a key per model, its value a JSON assignment (the
datacenter-local reference at a digest, the size, the nodes that cache it). Every
ModelArtifact writes its own key with a field manager of its own (server-side apply),
so passes over different models never overwrite each other and a model takes only
its own key away.

A node agent reports on its Node: the label `model.fleet.mlops.dev/<model>=ready`
once the model is on the node's disk (so pods can be scheduled there), and the
annotation `model.fleet.mlops.dev/status`, a JSON document with every assigned
model's phase at its digest. The controller reads the Nodes' metadata and counts,
per cluster, nodes ready out of nodes that should hold the model (`cluster_entry`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.select import InvalidSelector, matches

JSON = dict[str, Any]
CATALOGUE_NAMESPACE = "fleet-system"
CATALOGUE_NAME = "fleet-models"
READY_LABEL_PREFIX = "model.fleet.mlops.dev/"
READY = "ready"
STATUS_ANNOTATION = "model.fleet.mlops.dev/status"
DEFAULT_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
NODE_READY, NODE_PULLING, NODE_FAILED, NODE_NO_SPACE = "Ready", "Pulling", "Failed", "NoSpace"
ERRORS_KEPT = 5
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
# OCI image-spec descriptor digest: algorithm ":" encoded.
_DIGEST = re.compile(r"^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+\Z")


def field_manager(namespace: str, model: str) -> str:
    """The field manager a ModelArtifact's key in the catalogue is applied with."""
    return f"fleet-model/{namespace}/{model}"[:128]


def ready_label(model: str) -> str:
    return f"{READY_LABEL_PREFIX}{model}"


def cacheable_name(model: str) -> bool:
    """Whether a model name can be a catalogue key and a label name (a DNS label)."""
    return bool(_NAME.match(model))


@dataclass(frozen=True, slots=True)
class Assignment:
    """One model as the node agents and the webhook of a cluster see it."""

    name: str
    reference: str  # registry/repository@digest, in the cluster's datacenter
    digest: str
    size_bytes: int
    # Not hashed: an assignment is compared by value, and a dict cannot be hashed.
    node_selector: Mapping[str, str] = field(default_factory=dict, hash=False)
    ca_pem: str = ""  # the datacenter registry's CA; empty: the system's
    pull_secret: str = ""  # a dockerconfigjson Secret in fleet-system, when the registry asks

    def to_text(self) -> str:
        body: JSON = {
            "reference": self.reference,
            "digest": self.digest,
            "sizeBytes": self.size_bytes,
            "nodeSelector": dict(self.node_selector),
        }
        if self.ca_pem:
            body["caBundle"] = self.ca_pem
        if self.pull_secret:
            body["pullSecret"] = self.pull_secret
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


def parse_assignments(data: Mapping[str, str]) -> tuple[dict[str, Assignment], list[str]]:
    """The catalogue's models by name, and a problem for each key that is not one: a
    malformed entry is reported and skipped, never handed to an agent or a pod."""
    found: dict[str, Assignment] = {}
    problems: list[str] = []
    for name in sorted(data):
        try:
            found[name] = _assignment(name, data[name])
        except ValueError as error:
            problems.append(f"{CATALOGUE_NAMESPACE}/{CATALOGUE_NAME} key {name!r}: {error}")
    return found, problems


def _assignment(name: str, text: str) -> Assignment:
    if not cacheable_name(name):
        raise ValueError("not a model name (a DNS label of at most 63 characters)")
    try:
        body = json.loads(text)
    except (TypeError, ValueError) as error:
        raise ValueError(f"not JSON ({error})") from error
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    reference, digest = body.get("reference"), body.get("digest")
    if not isinstance(reference, str) or not reference:
        raise ValueError("needs a reference")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ValueError("needs a digest (algorithm:hex)")
    pinned = reference.rpartition("@")[2] if "@" in reference else digest
    if pinned != digest:
        raise ValueError(f"reference is pinned at {pinned}, digest says {digest}")
    size = body.get("sizeBytes", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError("sizeBytes is not a whole number of bytes")
    selector = body.get("nodeSelector") or {}
    if not isinstance(selector, dict) or not all(isinstance(v, str) for v in selector.values()):
        raise ValueError("nodeSelector is not a map of strings")
    return Assignment(
        name=name,
        reference=reference,
        digest=digest,
        size_bytes=size,
        node_selector=dict(selector),
        ca_pem=str(body.get("caBundle") or ""),
        pull_secret=str(body.get("pullSecret") or ""),
    )


def wants(assignment: Assignment, node_labels: Mapping[str, str]) -> bool:
    return all(node_labels.get(k) == v for k, v in assignment.node_selector.items())


def node_status(text: str | None) -> JSON:
    """A Node's status annotation read leniently: an agent that wrote nothing yet, or
    something unreadable, reports no models."""
    if not text:
        return {}
    try:
        body = json.loads(text)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def cluster_entry(
    cluster: str,
    datacenter: str,
    model: str,
    digest: str,
    node_selector: Mapping[str, str],
    nodes: Iterable[JSON],
) -> JSON:
    """How far a cluster's nodes have the model at `digest`: nodes ready / nodes that
    should have it, and the errors nodes report (a few, by node name)."""
    total = ready = 0
    errors: list[JSON] = []
    selector = {"matchLabels": dict(node_selector)}
    for node in nodes:
        meta = node.get("metadata") or {}
        labels = meta.get("labels") or {}
        try:
            selected = matches(selector, labels)
        except InvalidSelector:
            selected = False
        if not selected:
            continue
        total += 1
        status = node_status((meta.get("annotations") or {}).get(STATUS_ANNOTATION))
        models = status.get("models")
        reported = models.get(model) if isinstance(models, dict) else None
        if not isinstance(reported, dict) or reported.get("digest") != digest:
            continue  # nothing said yet of this digest
        if reported.get("phase") == NODE_READY and labels.get(ready_label(model)) == READY:
            ready += 1
        elif reported.get("phase") in (NODE_FAILED, NODE_NO_SPACE):
            errors.append(
                {
                    "node": meta.get("name", ""),
                    "reason": reported["phase"],
                    "message": str(reported.get("message", ""))[:300],
                }
            )
    entry: JSON = {
        "name": cluster,
        "datacenter": datacenter,
        "nodesReady": ready,
        "nodesTotal": total,
    }
    if errors:
        entry["errors"] = sorted(errors, key=lambda e: e["node"])[:ERRORS_KEPT]
    return entry


def cached_summary(entries: Iterable[JSON]) -> str:
    """`nodes ready/nodes` over every cluster, for the status and its printer column."""
    listed = list(entries)
    return (
        f"{sum(e.get('nodesReady', 0) for e in listed)}/"
        f"{sum(e.get('nodesTotal', 0) for e in listed)}"
    )
