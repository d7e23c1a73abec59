"""Keep one AddonDeployment per (profile, matched cluster), and the profile's summary.

`decide` is pure: from the profile, the Clusters of its namespace, its
Addons, their Datacenters and the existing deployments (all from the watch
caches) it returns what to create, update and delete, which Clusters need
fleet's finalizer, and the status. Safety lives here: a paused Cluster's
deployment is left exactly as it is, a Cluster that is not ready keeps its
add-ons, and removing add-ons from many clusters at once waits for a human.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet import revisions
from fleet.api import (
    API_VERSION,
    CLEANUP_FINALIZER,
    CLUSTER_FINALIZER,
    CONFIRM_REMOVAL_ANNOTATION,
    LABEL_CLUSTER,
    LABEL_PROFILE,
    MOVED_AT_ANNOTATION,
    deployment_name,
    profile_owner,
)
from fleet.api.models import Cluster, DeploymentSpec, InvalidSpec, Profile, parse_profile
from fleet.controller import rollouts
from fleet.hashing import digest
from fleet.revisions import Snapshot
from fleet.select import InvalidSelector, matches
from fleet.status import FAILED, READY, UNREACHABLE, now, stamp

JSON = dict[str, Any]
NAMES_SHOWN = 10
# Fields of a profile's spec that act at once on every revision: not part of what a
# cluster's revision hashes (a new selector or rollout setting re-applies nothing).
NOT_APPLIED = ("addons", "clusterSelector", "rollout", "revisionHistoryLimit", "paused", "safety")


def revision(shared: str, cluster: Cluster, datacenter: str) -> str:
    """Hash of every input that decides what a cluster gets (pure).

    `shared` is the digest of the profile and its add-ons, `datacenter` of the
    cluster's Datacenter: each hashed once per sync, not once per cluster.
    """
    return digest(
        {
            "shared": shared,
            "cluster": {
                "labels": cluster.labels,
                "annotations": cluster.annotations,
                "topology": cluster.topology,
            },
            "datacenter": datacenter,
        }
    )


def shared_inputs(profile_spec: JSON, profile_revision: str) -> str:
    """Digest of what every cluster on `profile_revision` of this profile gets alike."""
    applied = {k: v for k, v in profile_spec.items() if k not in NOT_APPLIED}
    return digest({"revision": profile_revision, "profile": applied})


def desired_deployment(
    profile_body: JSON,
    profile: Profile,
    cluster: Cluster,
    rev: str,
    profile_revision: str,
    moved_at: str,
) -> JSON:
    meta = profile_body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "AddonDeployment",
        "metadata": {
            "name": deployment_name(meta["name"], cluster.name),
            "namespace": meta["namespace"],
            "labels": {LABEL_PROFILE: meta["name"], LABEL_CLUSTER: cluster.name},
            "annotations": {MOVED_AT_ANNOTATION: moved_at},
            # Present from creation, so that a deletion can never skip the cleanup.
            "finalizers": [CLEANUP_FINALIZER],
            "ownerReferences": [profile_owner(meta)],
        },
        "spec": DeploymentSpec.for_cluster(profile, cluster.name, rev, profile_revision).to_json(),
    }


def removal_token(names: list[str]) -> str:
    """Names exactly one set of removals: a confirmation is for that set, not a later one."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:12]


def removal_blocked(removals: list[str], total: int, max_percent: int) -> bool:
    """More than one cluster and more than `max_percent` of the profile's clusters at once."""
    return len(removals) > 1 and len(removals) > math.floor(total * max_percent / 100)


@dataclass(frozen=True, slots=True)
class History:
    """A profile's kept revisions (by hash), its rollout record as last written, and the
    time (seconds since the epoch) of this pass."""

    snapshots: Mapping[str, Snapshot] = field(default_factory=dict)
    record: JSON | None = None
    now: float = 0.0


@dataclass(slots=True)
class Decision:
    """What one pass over a profile does: deployments to create, patch (name -> merge
    patch) and delete, Clusters to finalize, the revision to keep first and the ones to
    let go, the status, the events (a guarded removal's only when its message is new;
    the rollout's every time) and when to look again."""

    create: list[JSON] = field(default_factory=list)
    update: dict[str, JSON] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    finalize: list[Cluster] = field(default_factory=list)
    snapshot: JSON | None = None
    prune: list[str] = field(default_factory=list)
    status: JSON = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    rollout_events: list[tuple[str, str, str]] = field(default_factory=list)
    requeue: float | None = None


def _condition(kind: str, ok: bool, reason: str, message: str) -> JSON:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


def _summary(deployments: list[JSON]) -> JSON:
    phases = [(d.get("status") or {}).get("phase") or "Unknown" for d in deployments]
    settled = phases.count(READY) + phases.count(FAILED) + phases.count(UNREACHABLE)
    return {
        "matched": len(deployments),
        "ready": phases.count(READY),
        "failed": phases.count(FAILED),
        "unreachable": phases.count(UNREACHABLE),
        "progressing": len(phases) - settled,
    }


def decide(
    body: JSON,
    clusters: list[Cluster],
    addon_specs: dict[str, JSON | None],
    datacenters: dict[str, JSON | None],
    existing: dict[str, JSON],
    history: History | None = None,
) -> Decision:
    decision = Decision()
    history = history or History()
    meta = body["metadata"]
    try:
        profile = parse_profile(body)
        matched = sorted(
            (c for c in clusters if not c.deleting and matches(profile.selector, c.labels)),
            key=lambda c: c.name,
        )
    except (InvalidSpec, InvalidSelector) as error:
        decision.status = {
            "observedGeneration": meta.get("generation"),
            "conditions": [_condition("Ready", False, "InvalidSpec", str(error))],
        }
        return decision
    by_name = {c.name: c for c in clusters}
    held = revisions.content(body["spec"], addon_specs)
    target = revisions.revision_hash(held)
    if target not in history.snapshots:
        number = revisions.next_number(history.snapshots.values())
        decision.snapshot = revisions.snapshot_body(body, target, held, number)
    on_cluster = {d["spec"]["cluster"]: d for d in existing.values()}
    wanted: dict[str, JSON] = {}
    step: rollouts.Step | None = None
    if not profile.paused:
        chosen, step = _revisions(profile, meta, matched, on_cluster, target, history)
        if step is not None:
            decision.rollout_events, decision.requeue = step.events, step.requeue
        moved_at = rollouts.precise(history.now)
        datacenter_digests = {name: digest(spec) for name, spec in datacenters.items()}
        shared: dict[str, str] = {}
        for cluster in matched:
            name = deployment_name(meta["name"], cluster.name)
            profile_revision = chosen.get(cluster.name)
            if profile_revision is None:  # not moved yet: as it is, or not there yet
                if name in existing:
                    wanted[name] = existing[name]
                continue
            if profile_revision not in shared:  # hashed once per revision, not per cluster
                shared[profile_revision] = shared_inputs(body["spec"], profile_revision)
            rev = revision(
                shared[profile_revision], cluster, datacenter_digests.get(cluster.datacenter, "")
            )
            wanted[name] = desired_deployment(
                body, profile, cluster, rev, profile_revision, moved_at
            )
    for name, present in existing.items():
        owner = by_name.get(present["spec"]["cluster"])
        # Hands off: a paused profile or a paused Cluster keeps its deployment exactly as it is.
        if profile.paused or (owner is not None and owner.paused):
            wanted[name] = present
    for name, want in wanted.items():
        found = existing.get(name)
        if found is None:
            decision.create.append(want)
        elif found.get("spec") != want["spec"]:
            decision.update[name] = {"spec": want["spec"]}
            if found["spec"].get("profileRevision") != want["spec"].get("profileRevision"):
                decision.update[name]["metadata"] = {"annotations": want["metadata"]["annotations"]}
    in_use = {target, *(d["spec"].get("profileRevision", "") for d in wanted.values())}
    if step is not None:
        in_use |= {step.record["target"], step.record["previous"]}
    decision.prune = revisions.to_prune(
        list(history.snapshots.values()), profile.revision_history, in_use
    )
    removals = sorted(set(existing) - set(wanted))
    # Clusters that are gone or being deleted always lose their add-ons; only
    # removals caused by a change of selection or labels are guarded.
    guarded = [
        n
        for n in removals
        if (c := by_name.get(existing[n]["spec"]["cluster"])) is not None and not c.deleting
    ]
    conditions = []
    pending: JSON | None = None
    token = removal_token(guarded)
    confirmed = (meta.get("annotations") or {}).get(CONFIRM_REMOVAL_ANNOTATION) == token
    if removal_blocked(guarded, len(existing), profile.max_removal_percent) and not confirmed:
        shown = ", ".join(existing[n]["spec"]["cluster"] for n in guarded[:NAMES_SHOWN])
        more = f" and {len(guarded) - NAMES_SHOWN} more" if len(guarded) > NAMES_SHOWN else ""
        message = (
            f"removing add-ons from {len(guarded)} of {len(existing)} clusters at once "
            f"({shown}{more}) waits for confirmation: "
            f"fleet confirm-removal -n {meta['namespace']} {meta['name']}, or annotate the "
            f"profile {CONFIRM_REMOVAL_ANNOTATION}={token}"
        )
        conditions.append(_condition("RemovalBlocked", True, "TooManyRemovals", message))
        decision.events.append(("Warning", "RemovalBlocked", message))
        removals = [n for n in removals if n not in guarded]
        pending = {"token": token, "clusters": [existing[n]["spec"]["cluster"] for n in guarded]}
    decision.delete = removals
    decision.finalize = [c for c in matched if CLUSTER_FINALIZER not in c.finalizers]
    kept = [d for n, d in existing.items() if n in wanted]
    summary = _summary(kept) | {"matched": len(wanted)}
    missing = sorted(n for n, spec in addon_specs.items() if spec is None)
    message = (
        f"Addons not found: {', '.join(missing)}"
        if missing
        else f"{summary['ready']}/{summary['matched']} clusters ready"
    )
    conditions.insert(
        0,
        _condition(
            "Ready",
            not missing and summary["ready"] == summary["matched"],
            "AddonsMissing" if missing else "Summary",
            message,
        ),
    )
    decision.status = {
        "observedGeneration": meta.get("generation"),
        "revision": target,
        "matchedClusters": [c.name for c in matched],
        "summary": summary,
        "conditions": conditions,
        "pendingRemoval": pending,
    }
    if not profile.paused:
        decision.status["rollout"] = step.record if step is not None else None
    return decision


def _revisions(
    profile: Profile,
    meta: JSON,
    matched: list[Cluster],
    on_cluster: dict[str, JSON],
    target: str,
    history: History,
) -> tuple[dict[str, str], rollouts.Step | None]:
    """The profile revision each matched cluster is to be on (one missing stays as it
    is), and with a rollout spec the planner's step."""
    if profile.rollout is None:
        return {c.name: target for c in matched}, None
    movable = [c for c in matched if not c.paused]
    states = [rollouts.cluster_state(c, on_cluster.get(c.name)) for c in movable]
    messages = {
        name: str((d.get("status") or {}).get("message") or "") for name, d in on_cluster.items()
    }
    step = rollouts.step(
        profile.rollout,
        history.record,
        meta.get("annotations") or {},
        states,
        target,
        history.now,
        messages,
    )
    chosen = {s.name: s.revision for s in states if s.revision}
    chosen.update(step.moves)
    return chosen, step


def _set_fields(value: Any) -> Any:
    """A status field as the API keeps it after a merge patch: its nulls removed."""
    if isinstance(value, dict):
        return {k: _set_fields(v) for k, v in value.items() if v is not None}
    return value


def status_patch(current: JSON, wanted: JSON) -> JSON | None:
    """The status to write, or None when nothing changed.

    A condition keeps its lastTransitionTime while its status stays the same;
    a condition that went away is written as absent.
    """
    previous = {c["type"]: c for c in current.get("conditions") or []}
    for condition in wanted.get("conditions", []):
        before = previous.get(condition["type"])
        if before is not None and before.get("status") == condition["status"]:
            condition["lastTransitionTime"] = before.get("lastTransitionTime")
        else:
            condition["lastTransitionTime"] = stamp(now())
    comparable = {
        key: value for key, value in wanted.items() if current.get(key) != _set_fields(value)
    }
    if "conditions" in comparable:
        strip = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in wanted["conditions"]
        ]
        old = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in current.get("conditions") or []
        ]
        if strip == old:
            comparable.pop("conditions")
    return wanted if comparable else None
