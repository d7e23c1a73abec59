"""Reconcile one AddonDeployment: the add-ons of one profile on one cluster.

Fixed order, as Cluster API's ClusterResourceSet: inputs (already in the
watch caches) → cluster gates (gone, paused, not ready) → connect → render
*everything* → per add-on (dependencies first) plan and carry out → one
status patch at the end, only when it changed. Failures are contained: they
end in this deployment's status with a phase, a message and an event, never
in another deployment's.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet.api.models import Addon, Cluster, Datacenter, Profile, parse_deployment_spec
from fleet.apply import AddonOnCluster, ApplyFailed, applyset_id
from fleet.connections.cache import ClusterCache, Kubeconfig
from fleet.connections.client import ClusterClient, ClusterNotConnected, KindNotServed
from fleet.errors import FleetError, PermanentError, TemporaryError
from fleet.hashing import digest
from fleet.health import FAILED as HEALTH_FAILED
from fleet.health import Health, health, summarize
from fleet.metrics import Metrics
from fleet.order import dependency_order
from fleet.plan import STRATEGIES, Live, ObjectKey, Record, Situation
from fleet.render.templates import (
    ChartTemplater,
    RenderContext,
    gpu_inventory,
    kubelet_version,
    render_addon,
)
from fleet.status import (
    APPLYING,
    DEGRADED,
    FAILED,
    PAUSED,
    PENDING,
    READY,
    UNREACHABLE,
    backoff_seconds,
    drift_interval,
    health_poll_seconds,
    now,
    parse_time,
    stamp,
    summary_message,
    worst,
)

JSON = dict[str, Any]
Event = tuple[str, str, str]


@dataclass(slots=True)
class DeploymentMemo:
    """What this process remembers of one deployment; kept in kopf's per-object memo."""

    fingerprints: dict[str, dict[ObjectKey, str]] = field(default_factory=dict)
    # The add-ons as last rendered, and the digest of every input that rendering read:
    # a drift check of an unchanged deployment renders nothing.
    rendered: tuple[str, dict[str, list[JSON]]] = ("", {})
    last_drift_check: float = 0.0
    health_polls: int = 0
    failures: int = 0


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything a reconcile reads, taken from the watch caches in one go."""

    body: JSON
    cluster: Cluster | None
    profile: Profile | None
    addons: dict[str, Addon | None]
    datacenter: Datacenter | None
    kubeconfig: Kubeconfig | None
    problem: str = ""
    # Every Datacenter: a chart may come from any of their registries.
    datacenters: tuple[JSON, ...] = ()


@dataclass(slots=True)
class Outcome:
    """A reconcile's result: the status to write (None: unchanged), events, when to look again."""

    status: JSON | None
    events: list[Event] = field(default_factory=list)
    requeue: float | None = None
    # ApplySet records written before applying, by add-on: kept whatever happens next.
    recorded: dict[str, JSON] = field(default_factory=dict)


@dataclass(slots=True)
class Engine:
    """What a reconcile needs besides its inputs."""

    connections: ClusterCache
    metrics: Metrics
    # (cluster's Kubernetes version, every Datacenter) -> the Helm renderer for that cluster
    charts: Callable[[str, tuple[JSON, ...]], ChartTemplater]
    record: Callable[[JSON, list[JSON]], None]
    max_objects: int = 10_000


class _Stop(Exception):
    """Ends a reconcile early with a deployment-wide phase and message."""

    def __init__(self, phase: str, message: str, requeue: float | None) -> None:
        super().__init__(message)
        self.phase, self.message, self.requeue = phase, message, requeue


def _entry(before: JSON, name: str, phase: str, message: str, when: str, **extra: Any) -> JSON:
    kept = {
        k: v
        for k, v in before.items()
        if k in ("appliedRevision", "lastAppliedTime", "applyset", "objects")
    }
    entry = {**kept, **extra, "name": name, "phase": phase, "message": message[:1000]}
    entry["lastTransitionTime"] = (
        before.get("lastTransitionTime", when) if before.get("phase") == phase else when
    )
    return entry


def _previous(status: JSON) -> dict[str, JSON]:
    return {
        entry["name"]: entry for entry in status.get("addons") or [] if entry.get("name") != "*"
    }


def _finish(body: JSON, addons: list[JSON], extra: JSON) -> JSON | None:
    """The new status, or None when it says nothing new (then nothing is written)."""
    status = body.get("status") or {}
    phases = [a["phase"] for a in addons]
    revision = body["spec"]["revision"]
    applied = bool(addons) and all(a.get("appliedRevision") == revision for a in addons)
    phase = worst(phases)
    if phase == READY and not applied:
        phase = APPLYING
    new = {
        "phase": phase,
        "ready": f"{phases.count(READY)}/{len(addons)}",
        "message": summary_message(addons),
        "addons": addons,
        **extra,
    }
    new["appliedRevision"] = revision if applied else status.get("appliedRevision")
    new["observedGeneration"] = body["metadata"].get("generation")
    if all(status.get(k) == v for k, v in new.items()):
        return None
    return new


def reconcile(engine: Engine, inputs: Inputs, memo: DeploymentMemo) -> Outcome:
    body = inputs.body
    status = body.get("status") or {}
    when = stamp(now())
    outcome = Outcome(None)
    extra: JSON
    try:
        addons, extra = _reconcile(engine, inputs, memo, when, outcome)
    except _Stop as stop:
        previous = {
            name: entry | ({"applyset": outcome.recorded[name]} if name in outcome.recorded else {})
            for name, entry in _previous(status).items()
        }
        previous |= {
            name: {"name": name, "phase": stop.phase, "applyset": applyset}
            for name, applyset in outcome.recorded.items()
            if name not in previous
        }
        entries = [_entry(p, n, stop.phase, stop.message, when) for n, p in previous.items()] or [
            {"name": "*", "phase": stop.phase, "message": stop.message, "lastTransitionTime": when}
        ]
        extra = {"message": stop.message}
        if stop.phase in (FAILED, UNREACHABLE):
            memo.failures += 1
            extra["consecutiveFailures"] = memo.failures
            if stop.requeue is not None:
                retry_at = now() + datetime.timedelta(seconds=stop.requeue)
                extra["nextAttemptTime"] = stamp(retry_at)
        outcome.status = _finish(body, entries, extra)
        outcome.requeue = stop.requeue
        if outcome.status and stop.phase in (FAILED, UNREACHABLE):
            outcome.events.append(("Warning", stop.phase, stop.message))
        return outcome
    memo.failures = 0
    outcome.status = _finish(
        body, addons, extra | {"consecutiveFailures": 0, "nextAttemptTime": None}
    )
    return outcome


def _gates(inputs: Inputs) -> Cluster:
    cluster = inputs.cluster
    spec = inputs.body["spec"]
    if cluster is None:
        raise _Stop(PENDING, f"Cluster {spec['cluster']} not found", None)
    if cluster.paused:
        raise _Stop(
            PAUSED, f"cluster {cluster.name} is paused: its add-ons are left as they are", None
        )
    if not cluster.control_plane_ready:
        raise _Stop(PENDING, f"cluster {cluster.name} is waiting for its control plane", None)
    if inputs.problem:
        raise _Stop(FAILED, inputs.problem, None)
    return cluster


def _retry(memo: DeploymentMemo, error: TemporaryError) -> float:
    return max(error.delay, backoff_seconds(memo.failures + 1))


def _reconcile(
    engine: Engine, inputs: Inputs, memo: DeploymentMemo, when: str, outcome: Outcome
) -> tuple[list[JSON], JSON]:
    body = inputs.body
    meta = body["metadata"]
    deployment = parse_deployment_spec(body)
    cluster = _gates(inputs)
    profile = inputs.profile
    if profile is None:  # _gates stops on a problem, which a missing profile is
        raise _Stop(FAILED, "no profile", None)
    try:
        ordered = dependency_order(profile.addons)
        client = engine.connections.client(meta["namespace"], cluster.name, inputs.kubeconfig)
        nodes = list(client.list(client.resource("v1", "Node")))
        inventory = gpu_inventory(nodes)
        kube_version = kubelet_version(nodes)
        seen = {
            "kubernetesVersion": kube_version,
            "nodes": inventory.nodes,
            "gpuNodes": inventory.gpu_nodes,
            "gpus": inventory.total,
        }
        context = RenderContext(cluster, inputs.datacenter, inventory)
        addons = {name: addon for name, addon in inputs.addons.items() if addon is not None}
        inputs_digest = digest(
            [deployment.revision, seen, inventory.as_context(), cluster.endpoint]
        )
        if memo.rendered[0] == inputs_digest:
            rendered = memo.rendered[1]
        else:
            charts = engine.charts(kube_version, inputs.datacenters)
            # Render every add-on before applying any: a template error leaves the cluster
            # untouched.
            rendered = {
                e.name: render_addon(addons[e.name], e.values, context, charts) for e in ordered
            }
            memo.rendered = (inputs_digest, rendered)
        total = sum(len(objects) for objects in rendered.values())
        if total > engine.max_objects:
            raise _Stop(
                FAILED,
                f"the add-ons render {total} objects, over the limit of {engine.max_objects}",
                None,
            )
    except ClusterNotConnected as error:
        engine.metrics.reachable(meta["namespace"], deployment.cluster, False)
        raise _Stop(UNREACHABLE, str(error), _retry(memo, error)) from error
    except TemporaryError as error:
        raise _Stop(FAILED, str(error), _retry(memo, error)) from error
    except PermanentError as error:
        raise _Stop(FAILED, str(error), None) from error
    engine.metrics.reachable(meta["namespace"], deployment.cluster, True)

    drift_check = time.monotonic() - memo.last_drift_check >= drift_interval(
        meta["name"], deployment.drift_seconds
    )
    previous = _previous(body.get("status") or {})
    results: dict[str, JSON] = {}
    delays: list[float] = []
    for entry in ordered:
        before = previous.get(entry.name, {})
        waiting = [d for d in entry.depends_on if results[d]["phase"] != READY]
        if waiting:
            results[entry.name] = _entry(
                before, entry.name, PENDING, f"waiting for {', '.join(waiting)}", when
            )
            continue
        on_cluster = AddonOnCluster(
            client,
            applyset_id(f"{meta['name']}.{entry.name}", meta["namespace"]),
            f"{meta['namespace']}/{profile.name}/{entry.name}",
        )

        def record_first(
            name: str, record: Record, on_cluster: AddonOnCluster = on_cluster
        ) -> None:
            entries = [*results.values(), *(p for n, p in previous.items() if n not in results)]
            current = previous.get(name, {"name": name, "phase": APPLYING, "message": ""})
            current = {**current, "applyset": {"id": on_cluster.applyset, **record.to_json()}}
            engine.record(body, [e for e in entries if e["name"] != name] + [current])
            previous[name] = current
            outcome.recorded[name] = current["applyset"]

        try:
            result, delay = _reconcile_addon(
                engine,
                on_cluster,
                addons[entry.name],
                entry.name,
                rendered[entry.name],
                previous.get(entry.name, {}),
                profile,
                deployment.revision,
                when,
                drift_check,
                memo,
                outcome.events,
                record_first,
            )
        except ClusterNotConnected as error:
            raise _Stop(UNREACHABLE, str(error), _retry(memo, error)) from error
        except TemporaryError as error:
            before = previous.get(entry.name, {})  # with the record written before applying
            result, delay = _entry(before, entry.name, APPLYING, str(error), when), error.delay
        except PermanentError as error:
            before = previous.get(entry.name, {})
            result, delay = _entry(before, entry.name, FAILED, str(error), when), None
            outcome.events.append(("Warning", "Failed", f"{entry.name}: {error}"))
        results[entry.name] = result
        if delay is not None:
            delays.append(delay)
    _withdraw_removed(client, previous, results, profile, outcome.events)
    if drift_check:
        memo.last_drift_check = time.monotonic()
    if any(r["phase"] in (APPLYING, DEGRADED) for r in results.values()):
        memo.health_polls += 1
        delays.append(health_poll_seconds(memo.health_polls))
    else:
        memo.health_polls = 0
    delays.append(drift_interval(meta["name"], deployment.drift_seconds))
    outcome.requeue = min(delays)
    return [results[e.name] for e in profile.addons if e.name in results], {"cluster": seen}


def _health(desired: list[JSON], found: dict[ObjectKey, Live]) -> list[tuple[str, Health]]:
    states = []
    for body in desired:
        key = ObjectKey.of(body)
        live = found.get(key)
        states.append((str(key), health(live.body) if live else Health("Progressing", "not found")))
    return states


def _reconcile_addon(
    engine: Engine,
    on_cluster: AddonOnCluster,
    addon: Addon,
    name: str,
    objects: list[JSON],
    before: JSON,
    profile: Profile,
    revision: str,
    when: str,
    drift_check: bool,
    memo: DeploymentMemo,
    events: list[Event],
    record_first: Callable[[str, Record], None],
) -> tuple[JSON, float | None]:
    desired = on_cluster.prepare(objects, addon.default_namespace)
    record = Record.from_json(before.get("applyset"))
    covering = record.covering(desired)
    owned = on_cluster.owned(covering, bodies=profile.sync_mode == "DryRun")
    known = memo.fingerprints.setdefault(name, {})
    situation = Situation(
        desired=tuple(desired),
        live=owned,
        foreign=on_cluster.foreign(desired, owned),
        adopt=addon.adopt,
        revision=revision,
        applied_revision=str(before.get("appliedRevision") or ""),
        known=known,
        drift_check=drift_check,
    )
    plan = STRATEGIES[profile.sync_mode].plan(situation)
    applyset = {"id": on_cluster.applyset, **covering.to_json()}
    if plan.conflicts:
        message = (
            "; ".join(plan.conflicts)
            + ": nothing was applied; set spec.adopt: true on the Addon to take them over"
        )
        events.append(("Warning", "Conflict", f"{name}: {message}"))
        return _entry(before, name, FAILED, message, when, applyset=applyset), None
    if plan.dry_run:
        changes = on_cluster.dry_run(plan.dry_run, owned) + list(plan.drift)
        message = f"dry run: {len(changes)} objects would change" if changes else ""
        return _entry(
            before,
            name,
            PENDING if changes else READY,
            message,
            when,
            drift=changes[:10],
            appliedRevision=revision,
        ), None
    extra: JSON = {"applyset": applyset}
    found = dict(owned)
    if plan.apply:
        if covering != record:
            record_first(name, covering)
        try:
            applied = on_cluster.apply(plan.apply)
        except ApplyFailed as error:
            for live in error.applied:
                known[live.key] = live.fingerprint
            raise
        for live in applied:
            known[live.key] = live.fingerprint
            found[live.key] = live
        engine.metrics.applied(len(applied), 0)
        extra["lastAppliedTime"] = when
    if plan.drift and plan.apply:
        engine.metrics.drift_corrected(len(plan.drift))
        events.append(("Warning", "DriftCorrected", f"{name}: corrected {'; '.join(plan.drift)}"))
        extra["drift"] = list(plan.drift)
    elif plan.applies_revision:
        extra["drift"] = []
    if plan.prune:
        pruned = on_cluster.delete(plan.prune)
        for key in pruned:
            found.pop(key, None)
            known.pop(key, None)
        engine.metrics.applied(0, len(pruned))
        if pruned:
            events.append(("Normal", "Pruned", f"{name}: pruned {', '.join(map(str, pruned))}"))
    if plan.applies_revision:
        extra["appliedRevision"] = revision
    extra["objects"] = len(desired)
    state = summarize(_health(desired, found))
    if state.ready:
        return _entry(before, name, READY, "", when, **extra), None
    if state.state == HEALTH_FAILED:
        return _entry(before, name, DEGRADED, state.message, when, **extra), None
    applied_at = parse_time(extra.get("lastAppliedTime") or before.get("lastAppliedTime"))
    overdue = applied_at and (now() - applied_at).total_seconds() > addon.health_timeout_seconds
    return _entry(
        before, name, DEGRADED if overdue else APPLYING, state.message, when, **extra
    ), None


def _withdraw_removed(
    client: ClusterClient,
    previous: dict[str, JSON],
    results: dict[str, JSON],
    profile: Profile,
    events: list[Event],
) -> None:
    """Delete the objects of add-ons that left the profile (unless the policy orphans them)."""
    for name, entry in previous.items():
        if name in results or not entry.get("applyset"):
            continue
        if profile.cleanup_policy == "Orphan":
            events.append(("Normal", "Orphaned", f"{name} left the profile; objects kept"))
            continue
        deleted = _delete_owned(client, entry["applyset"])
        events.append(
            ("Normal", "Withdrawn", f"{name} left the profile: deleted {len(deleted)} objects")
        )


def _delete_owned(client: ClusterClient, applyset: JSON) -> list[ObjectKey]:
    on_cluster = AddonOnCluster(client, applyset["id"], "")
    try:
        owned = on_cluster.owned(Record.from_json(applyset))
    except KindNotServed:
        return []
    return on_cluster.delete(owned.values())


def cleanup(engine: Engine, inputs: Inputs, grace_seconds: float) -> str:
    """Delete what a deployment applied (unless orphaned); never block a gone cluster forever.

    Returns what was done, for the event. Raises TemporaryError to be retried
    while the cluster is live but unreachable, until `grace_seconds` after
    deletion started.
    """
    body = inputs.body
    meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
    if parse_deployment_spec(body).cleanup_policy == "Orphan":
        return "objects orphaned by policy"
    sets = [a["applyset"] for a in reversed(status.get("addons") or []) if a.get("applyset")]
    if not sets:
        return "nothing was applied"
    cluster = inputs.cluster
    if cluster is None:
        return f"cluster {spec['cluster']} is gone; nothing to delete from"
    try:
        client = engine.connections.client(meta["namespace"], cluster.name, inputs.kubeconfig)
        deleted = [key for applyset in sets for key in _delete_owned(client, applyset)]
    except FleetError as error:
        started = parse_time(meta.get("deletionTimestamp"))
        elapsed = (now() - started).total_seconds() if started else 0
        if cluster.deleting or elapsed > grace_seconds:
            return f"cluster unreachable ({error}); gave up deleting its objects"
        raise TemporaryError(f"cleanup of {spec['cluster']}: {error}", delay=5) from error
    return f"deleted {len(deleted)} objects"
