"""Which datacenter registries must hold a ModelArtifact, and what its status says: pure.

A ModelArtifact names a source OCI reference and selects Clusters; every datacenter
holding a selected cluster gets a replica in its own registry (`targets`). Each
datacenter's entry in the status comes from what its copy reports (`entry`), and
the whole from the entries (`summary`). No I/O here: the controller resolves
digests, runs the copies and writes the status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.api.models import Cluster, Datacenter, InvalidSpec
from fleet.nodecache import DEFAULT_NODE_SELECTOR, cacheable_name
from fleet.oci.reference import Reference, ReferenceError, parse_reference
from fleet.select import InvalidSelector, matches

JSON = dict[str, Any]
PENDING, COPYING, WARMING, REPLICATED, FAILED = (
    "Pending",
    "Copying",
    "Warming",
    "Replicated",
    "Failed",
)
MESSAGE_LIMIT = 500


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A ModelArtifact's spec, checked."""

    name: str
    namespace: str
    source: Reference
    selector: JSON
    repository: str
    credentials_secret: str = ""
    ca_secret: str = ""
    insecure: bool = False
    resolve_seconds: int = 300
    parallel: int = 4
    cache: bool = True  # the node agents of the selected clusters keep it on disk
    node_selector: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_NODE_SELECTOR))


def parse_model(body: JSON) -> ModelSpec:
    meta, spec = body["metadata"], body.get("spec") or {}
    where = f"ModelArtifact {meta.get('namespace')}/{meta['name']}"
    source = spec.get("source") or {}
    try:
        reference = parse_reference(str(source.get("reference", "")))
    except ReferenceError as error:
        raise InvalidSpec(f"{where}: spec.source.reference: {error}") from None
    selector = spec.get("clusterSelector") or {}
    if not isinstance(selector, dict):
        raise InvalidSpec(f"{where}: spec.clusterSelector must be a label selector")
    cache = spec.get("cache") or {}
    enabled = bool(cache.get("enabled", True))
    node_selector = cache.get("nodeSelector")
    if node_selector is None:
        node_selector = dict(DEFAULT_NODE_SELECTOR)
    if not isinstance(node_selector, dict):
        raise InvalidSpec(f"{where}: spec.cache.nodeSelector must map label names to values")
    if enabled and not cacheable_name(meta["name"]):
        raise InvalidSpec(
            f"{where}: a cached model's name must be a DNS label of at most 63 characters "
            "(it names a node label); set spec.cache.enabled: false or rename it"
        )
    return ModelSpec(
        name=meta["name"],
        namespace=meta.get("namespace", ""),
        source=reference,
        selector=selector,
        repository=str(spec.get("repository") or reference.repository),
        credentials_secret=str((source.get("credentialsSecretRef") or {}).get("name", "")),
        ca_secret=str((source.get("ca") or {}).get("name", "")),
        insecure=bool(source.get("insecure", False)),
        resolve_seconds=int(spec.get("resolveIntervalSeconds", 300)),
        parallel=int(spec.get("parallelBlobs", 4)),
        cache=enabled,
        node_selector={str(k): str(v) for k, v in node_selector.items()},
    )


@dataclass(frozen=True, slots=True)
class Target:
    """One datacenter registry that must hold the artifact, and how to reach it."""

    datacenter: str
    registry: JSON  # the Datacenter's spec.registry
    repository: str
    clusters: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        return str(self.registry.get("url", ""))

    @property
    def pull_through(self) -> bool:
        return bool(self.registry.get("pullThrough", False))

    @property
    def rate(self) -> float:
        return float(self.registry.get("bandwidthBytesPerSecond") or 0)

    def reference(self, digest: str, tag: str = "") -> Reference:
        return Reference(self.host, self.repository, tag, digest)


@dataclass(frozen=True, slots=True)
class Selection:
    targets: tuple[Target, ...]
    clusters: tuple[str, ...]  # selected, by name
    problems: tuple[str, ...] = field(default=())


def targets(
    spec: ModelSpec, clusters: list[Cluster], datacenters: Mapping[str, Datacenter | None]
) -> Selection:
    """The datacenters of the selected clusters, each once, in name order; a selected
    cluster without a datacenter, or in one without a registry, is a problem."""
    try:
        chosen = sorted(
            (c for c in clusters if not c.deleting and matches(spec.selector, c.labels)),
            key=lambda c: c.name,
        )
    except InvalidSelector as error:
        return Selection((), (), (f"spec.clusterSelector: {error}",))
    by_datacenter: dict[str, tuple[Datacenter, list[str]]] = {}
    problems = []
    for cluster in chosen:
        found = datacenters.get(cluster.datacenter) if cluster.datacenter else None
        if not cluster.datacenter:
            problems.append(f"cluster {cluster.name} has no datacenter label")
        elif found is None:
            problems.append(f"cluster {cluster.name}: Datacenter {cluster.datacenter} not found")
        elif not found.registry.get("url"):
            problems.append(f"Datacenter {cluster.datacenter} has no registry")
        else:
            by_datacenter.setdefault(cluster.datacenter, (found, []))[1].append(cluster.name)
    made = tuple(
        Target(name, dict(found.registry), spec.repository, tuple(names))
        for name, (found, names) in sorted(by_datacenter.items())
    )
    return Selection(made, tuple(c.name for c in chosen), tuple(problems))


@dataclass(frozen=True, slots=True)
class CopyState:
    """What a datacenter's copy reports: running or done, its counts, its error."""

    digest: str
    running: bool
    done: bool = False
    report: JSON = field(default_factory=dict)
    error: str = ""


def entry(
    target: Target, digest: str, state: CopyState | None, before: JSON | None, now: str
) -> JSON:
    """A datacenter's status entry. A copy of another digest counts for nothing; an entry
    already Replicated at this digest stays so without a copy (the controller restarted)."""
    before = before or {}
    replica = str(target.reference(digest))
    if state is None or state.digest != digest:
        if before.get("phase") == REPLICATED and before.get("digest") == digest:
            return before
        phase, extra = PENDING, {"message": "waiting for the copy to start"}
    elif state.error and not state.running:
        phase, extra = FAILED, {"lastError": state.error[:MESSAGE_LIMIT], "message": ""}
    elif state.done:
        phase, extra = REPLICATED, {"message": ""}
    else:
        phase = WARMING if target.pull_through else COPYING
        extra = {"message": _progress(state.report)}
        if state.error:
            extra["lastError"] = state.error[:MESSAGE_LIMIT]
    made = {
        "name": target.datacenter,
        "phase": phase,
        "reference": replica,
        "digest": digest,
        **_counts(state.report if state is not None and state.digest == digest else {}),
        **extra,
    }
    made["lastTransitionTime"] = (
        before.get("lastTransitionTime") if before.get("phase") == phase else now
    ) or now
    return made


def _counts(report: JSON) -> JSON:
    keys = {
        "bytesTotal": "totalBytes",
        "bytesSent": "sentBytes",
        "bytesSkipped": "skippedBytes",
        "bytesResumed": "resumedBytes",
        "blobsCopied": "blobsCopied",
        "blobsSkipped": "blobsSkipped",
        "blobsMounted": "blobsMounted",
        "seconds": "seconds",
    }
    return {mine: report[theirs] for mine, theirs in keys.items() if theirs in report}


def _progress(report: JSON) -> str:
    total = int(report.get("expectedBytes") or 0)
    done = int(report.get("sentBytes", 0)) + int(report.get("skippedBytes", 0))
    if not total:
        return "starting"
    return f"{done * 100 // total}% ({done >> 20} of {total >> 20} MiB)"


def summary(entries: list[JSON], problems: tuple[str, ...]) -> tuple[str, JSON]:
    """`replicated` (n/m) and the Ready condition."""
    done = sum(1 for e in entries if e.get("phase") == REPLICATED)
    failed = [e for e in entries if e.get("phase") == FAILED]
    replicated = f"{done}/{len(entries)}"
    if failed:
        first = failed[0]
        message = f"{first['name']}: {first.get('lastError', '')}"
        return replicated, _condition(False, "ReplicationFailed", message)
    if problems:
        return replicated, _condition(False, "SelectionProblem", "; ".join(problems))
    if not entries:
        return replicated, _condition(False, "NoDatacenter", "no selected cluster")
    if done < len(entries):
        return replicated, _condition(False, "Replicating", f"{replicated} datacenters")
    return replicated, _condition(True, "Replicated", f"in all {len(entries)} datacenters")


def _condition(ok: bool, reason: str, message: str) -> JSON:
    return {
        "type": "Ready",
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message[:MESSAGE_LIMIT],
    }
