"""How far a profile, a cluster or the whole fleet has converged: counts and the laggards.

Pure: `fleet wait` and `fleet status --watch` read AddonDeployments and hand
them here. A deployment counts as Ready only at its wanted revision, so a
change that has not reached a cluster yet is not mistaken for done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.status import APPLYING, DEGRADED, FAILED, PAUSED, PENDING, READY, UNREACHABLE

JSON = dict[str, Any]
BROKEN = (FAILED, DEGRADED, UNREACHABLE)


@dataclass(frozen=True, slots=True)
class Laggard:
    cluster: str  # namespace/name
    profile: str
    phase: str
    message: str

    def __str__(self) -> str:
        where = f"{self.cluster} ({self.profile})" if self.profile else self.cluster
        return f"{where}: {self.phase}" + (f": {self.message}" if self.message else "")


@dataclass(frozen=True, slots=True)
class Progress:
    total: int
    ready: int
    applying: int
    failed: int
    laggards: tuple[Laggard, ...]

    @property
    def done(self) -> bool:
        return self.total > 0 and self.ready == self.total

    def line(self) -> str:
        return f"{self.ready}/{self.total} Ready, {self.applying} applying, {self.failed} failed"

    def to_json(self) -> JSON:
        return {
            "total": self.total,
            "ready": self.ready,
            "applying": self.applying,
            "failed": self.failed,
            "notReady": [str(lag) for lag in self.laggards],
        }


def phase_at_revision(body: JSON) -> str:
    """The deployment's phase, Applying while its applied revision lags its wanted one."""
    status = body.get("status") or {}
    phase = status.get("phase") or PENDING
    wanted = (body.get("spec") or {}).get("revision")
    if phase == READY and wanted and status.get("appliedRevision") != wanted:
        return APPLYING
    return str(phase)


def _cluster_of(body: JSON) -> tuple[str, str]:
    return body["metadata"]["namespace"], body["spec"]["cluster"]


def progress(
    deployments: list[JSON], expected: list[str] | None = None, target: str = ""
) -> Progress:
    """Counts over `deployments`; `expected` names clusters (namespace/name) that should have
    one, so that a cluster still waiting for its deployment counts as not Ready; with a
    `target` profile revision (a profile that rolls out), a deployment not on it yet is
    not Ready either."""
    laggards = []
    ready = applying = failed = 0
    seen = set()
    for body in sorted(
        deployments, key=lambda d: (d["metadata"]["namespace"], d["spec"]["cluster"])
    ):
        meta, spec = body["metadata"], body["spec"]
        cluster = f"{meta['namespace']}/{spec['cluster']}"
        seen.add(cluster)
        phase = phase_at_revision(body)
        behind = target and spec.get("profileRevision") != target
        if behind and phase != PAUSED:
            applying += 1
            on = spec.get("profileRevision") or "none"
            message = f"waiting for its wave: on revision {on}, rolling out {target}"
            laggards.append(Laggard(cluster, str(spec.get("profile", "")), PENDING, message))
            continue
        if phase in (READY, PAUSED):
            ready += phase == READY
            if phase == READY:
                continue
        elif phase in BROKEN:
            failed += 1
        else:
            applying += 1
        message = str((body.get("status") or {}).get("message") or "")
        laggards.append(Laggard(cluster, str(spec.get("profile", "")), phase, message))
    missing = [c for c in expected or [] if c not in seen]
    for cluster in missing:
        laggards.append(Laggard(cluster, "", PENDING, "no AddonDeployment yet"))
    total = len(deployments) + len(missing)
    return Progress(total, ready, applying + len(missing), failed, tuple(laggards))
