"""Reconcile one AddonDeployment: the add-ons of one profile on one cluster.

Fixed order, as Cluster API's ClusterResourceSet: fetch inputs, check the
cluster, connect, render *everything*, then per add-on (dependencies first)
apply, prune, check health and drift; one status patch at the end. Failures
are contained: they end in this deployment's status, never in another's.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from fleet.api.models import (
    Addon,
    AddonEntry,
    Profile,
    parse_addon,
    parse_cluster,
    parse_datacenter,
    parse_profile,
)
from fleet.apply import Applier, ObjectRef, applyset_id
from fleet.controller.management import Management
from fleet.errors import FleetError, PermanentError, TemporaryError
from fleet.health import FAILED as HEALTH_FAILED
from fleet.health import summarize
from fleet.helm import HelmRenderer
from fleet.metrics import Metrics
from fleet.order import dependency_order
from fleet.remote import (
    ClusterNotConnected,
    Remote,
    RemoteClusters,
    unreachable,
    unreachable_reason,
)
from fleet.render import (
    ChartTemplater,
    RenderContext,
    gpu_inventory,
    kubelet_version,
    render_addon,
)
from fleet.select import eligible
from fleet.status import (
    APPLYING,
    DEGRADED,
    FAILED,
    PENDING,
    READY,
    UNREACHABLE,
    backoff_seconds,
    material,
    now,
    parse_time,
    stamp,
    summary_message,
    worst,
)

JSON = dict[str, Any]


@dataclass(slots=True)
class Controller:
    """What every handler needs: the management cluster, workload clients, metrics."""

    management: Management
    remotes: RemoteClusters
    metrics: Metrics
    helm: HelmRenderer | None = None

    def charts(self, kube_version: str) -> ChartTemplater:
        """Renders helm add-ons for a cluster of `kube_version` (helm is found on first use)."""

        def template(addon: Addon, values: JSON) -> list[JSON]:
            if self.helm is None:
                self.helm = HelmRenderer()
            access = self.management.registry_access(addon.require_chart().repository)
            return self.helm.template(addon, values, kube_version, access)

        return template


@dataclass(slots=True)
class Outcome:
    """A reconcile's result: the status it wrote and the events to post about it."""

    status: JSON
    events: list[tuple[str, str, str]] = field(default_factory=list)


class _Stop(Exception):
    """Ends a reconcile early with a deployment-wide phase and message."""

    def __init__(self, phase: str, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.phase, self.message, self.retry = phase, message, retry


def _previous(status: JSON) -> dict[str, JSON]:
    return {entry["name"]: entry for entry in status.get("addons") or []}


def _entry(previous: JSON, name: str, phase: str, message: str, when: str, **extra: Any) -> JSON:
    entry = {**previous, **extra, "name": name, "phase": phase, "message": message}
    if previous.get("phase") != phase:
        entry["lastTransitionTime"] = when
    return entry


def reconcile(controller: Controller, body: JSON, *, drift: bool = True) -> Outcome:
    """Bring one deployment to its spec; returns the status it patched and events.

    With `drift=False` (a probe) applied objects are only read for health, not
    compared with a dry-run apply.
    """
    meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
    moment = now()
    when = stamp(moment)
    failures = int(status.get("consecutiveFailures", 0))
    new_status: JSON = {"lastAttemptTime": when}
    outcome = Outcome(new_status)
    try:
        addons = _reconcile_addons(controller, body, when, outcome, drift)
    except _Stop as stop:
        addons = [
            _entry(previous, name, stop.phase, stop.message, when)
            for name, previous in _previous(status).items()
        ] or [
            {"name": "*", "phase": stop.phase, "message": stop.message, "lastTransitionTime": when}
        ]
        new_status.update(phase=stop.phase, message=stop.message)
        if stop.retry:
            failures += 1
            delay = backoff_seconds(failures)
            new_status["nextAttemptTime"] = stamp(moment + datetime.timedelta(seconds=delay))
        else:
            new_status["nextAttemptTime"] = None
        new_status["consecutiveFailures"] = failures
        new_status["addons"] = addons
        new_status["ready"] = f"0/{len(addons)}"
        controller.management.patch_status(
            "addondeployments", meta["namespace"], meta["name"], new_status
        )
        return outcome
    phases = [a["phase"] for a in addons]
    phase = worst(phases)
    new_status.update(
        phase=phase,
        ready=f"{phases.count(READY)}/{len(addons)}",
        message=summary_message(addons),
        addons=addons,
        consecutiveFailures=0,
        nextAttemptTime=None,
    )
    if all(a.get("appliedRevision") == spec["revision"] for a in addons):
        new_status["appliedRevision"] = spec["revision"]
    merged = {k: v for k, v in {**status, **new_status}.items() if v is not None}
    if material(merged) != material(status):
        controller.management.patch_status(
            "addondeployments", meta["namespace"], meta["name"], new_status
        )
    return outcome


def _inputs(controller: Controller, body: JSON) -> tuple[Any, Profile, dict[str, Addon], Any]:
    namespace, spec = body["metadata"]["namespace"], body["spec"]
    management = controller.management
    cluster_body = management.cluster(namespace, spec["cluster"])
    if cluster_body is None:
        raise _Stop(PENDING, f"Cluster {spec['cluster']} not found", retry=False)
    cluster = parse_cluster(cluster_body)
    if not eligible(cluster):
        reason = (
            "paused"
            if cluster.paused
            else ("being deleted" if cluster.deleting else "waiting for its control plane")
        )
        raise _Stop(PENDING, f"cluster {cluster.name} is {reason}", retry=False)
    profile_body = management.get("addonprofiles", namespace, spec["profile"])
    if profile_body is None:
        raise _Stop(PENDING, f"AddonProfile {spec['profile']} not found", retry=False)
    profile = parse_profile(profile_body)
    addons = {}
    for entry in profile.addons:
        addon_body = management.get("addons", namespace, entry.name)
        if addon_body is None:
            raise _Stop(FAILED, f"Addon {namespace}/{entry.name} not found", retry=True)
        addons[entry.name] = parse_addon(addon_body)
    datacenter = None
    if cluster.datacenter:
        datacenter_body = management.datacenter(cluster.datacenter)
        datacenter = parse_datacenter(datacenter_body) if datacenter_body else None
    return cluster, profile, addons, datacenter


def _reconcile_addons(
    controller: Controller, body: JSON, when: str, outcome: Outcome, drift: bool
) -> list[JSON]:
    meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
    revision = spec["revision"]
    try:
        cluster, profile, addons, datacenter = _inputs(controller, body)
        ordered = dependency_order(profile.addons)
        remote = controller.remotes.for_cluster(cluster)
        try:
            nodes = (
                remote.dynamic.resources.get(api_version="v1", kind="Node")
                .get(_request_timeout=(3.0, 20.0))
                .to_dict()["items"]
            )
        except ClusterNotConnected:
            raise
        except Exception as error:
            if unreachable(error):
                raise ClusterNotConnected(f"{cluster.name}: {unreachable_reason(error)}") from error
            raise
        inventory = gpu_inventory(nodes)
        outcome.status["cluster"] = {
            "kubernetesVersion": kubelet_version(nodes),
            "nodes": inventory.nodes,
            "gpuNodes": inventory.gpu_nodes,
            "gpus": inventory.total,
        }
        context = RenderContext(cluster, datacenter, inventory)
        # Render every add-on before applying any: a template error leaves the cluster untouched.
        charts = controller.charts(outcome.status["cluster"]["kubernetesVersion"])
        rendered = {
            e.name: render_addon(addons[e.name], e.values, context, charts) for e in ordered
        }
    except ClusterNotConnected as error:
        controller.metrics.reachable(meta["namespace"], spec["cluster"], False)
        raise _Stop(UNREACHABLE, str(error), retry=True) from error
    except PermanentError as error:
        raise _Stop(FAILED, str(error), retry=True) from error
    controller.metrics.reachable(meta["namespace"], spec["cluster"], True)

    previous = _previous(status)
    results: dict[str, JSON] = {}
    for entry in ordered:
        addon = addons[entry.name]
        before = previous.get(entry.name, {})
        waiting = [d for d in entry.depends_on if results[d]["phase"] != READY]
        if waiting:
            results[entry.name] = _entry(
                before, entry.name, PENDING, f"waiting for {', '.join(waiting)}", when
            )
            continue
        applier = Applier(
            remote,
            applyset_id(f"{meta['name']}.{entry.name}", meta["namespace"]),
            f"{meta['namespace']}/{profile.name}/{entry.name}",
        )
        try:
            results[entry.name] = _reconcile_addon(
                controller,
                outcome.events,
                applier,
                addon,
                entry,
                rendered[entry.name],
                before,
                profile,
                revision,
                when,
                drift,
            )
        except ClusterNotConnected as error:
            raise _Stop(UNREACHABLE, str(error), retry=True) from error
        except TemporaryError as error:
            results[entry.name] = _entry(before, entry.name, APPLYING, str(error), when)
        except PermanentError as error:
            results[entry.name] = _entry(before, entry.name, FAILED, str(error), when)
    _withdraw_removed(remote, previous, results, profile, outcome.events)
    return [results[entry.name] for entry in profile.addons]


def _withdraw_removed(
    remote: Remote,
    previous: dict[str, JSON],
    results: dict[str, JSON],
    profile: Profile,
    events: list[tuple[str, str, str]],
) -> None:
    """Delete the objects of add-ons that left the profile (unless the policy orphans them)."""
    for name, entry in previous.items():
        if name in results or not entry.get("inventory"):
            continue
        refs = [ObjectRef.from_json(ref) for ref in entry["inventory"]]
        if profile.cleanup_policy == "Orphan":
            events.append(("Normal", "Orphaned", f"{name} left the profile; objects kept"))
            continue
        deleted = Applier(remote, "", "").delete(refs)
        events.append(
            (
                "Normal",
                "Withdrawn",
                f"{name} left the profile: deleted {', '.join(map(str, deleted))}",
            )
        )


def _reconcile_addon(
    controller: Controller,
    events: list[tuple[str, str, str]],
    applier: Applier,
    addon: Addon,
    entry: AddonEntry,
    objects: list[JSON],
    before: JSON,
    profile: Profile,
    revision: str,
    when: str,
    drift: bool,
) -> JSON:
    inventory = [ObjectRef.from_json(ref) for ref in before.get("inventory") or []]
    applied_revision = before.get("appliedRevision")
    mode = profile.sync_mode
    if not drift and applied_revision == revision and mode == "DryRun":
        return before
    if mode == "DryRun":
        differences = applier.drift(objects, addon.default_namespace)
        message = f"dry run: {len(differences)} objects would change" if differences else ""
        return _entry(
            before,
            entry.name,
            PENDING if differences else READY,
            message,
            when,
            drift=differences,
            appliedRevision=revision,
        )
    extra: JSON = {}
    if applied_revision != revision and not (mode == "OneTime" and applied_revision):
        refs = applier.apply(objects, addon.default_namespace)
        stale = sorted(set(inventory) - set(refs))
        pruned = applier.delete(stale)
        controller.metrics.applied(len(refs), len(pruned))
        if pruned:
            events.append(
                ("Normal", "Pruned", f"{entry.name}: pruned {', '.join(map(str, pruned))}")
            )
        inventory = refs
        extra.update(appliedRevision=revision, lastAppliedTime=when, drift=[])
    elif mode == "Continuous" and drift:
        drifted = applier.drift(objects, addon.default_namespace)
        if drifted:
            inventory = applier.apply(objects, addon.default_namespace)
            controller.metrics.drift_corrected(len(drifted))
            events.append(
                ("Warning", "DriftCorrected", f"{entry.name}: corrected {'; '.join(drifted)}")
            )
            extra.update(drift=drifted, lastAppliedTime=when)
    extra["inventory"] = [ref.to_json() for ref in inventory]
    health = summarize(applier.health(inventory))
    if health.ready:
        return _entry(before, entry.name, READY, "", when, **extra)
    if health.state == HEALTH_FAILED:
        return _entry(before, entry.name, DEGRADED, health.message, when, **extra)
    applied_at = parse_time(extra.get("lastAppliedTime") or before.get("lastAppliedTime"))
    overdue = applied_at and (now() - applied_at).total_seconds() > addon.health_timeout_seconds
    return _entry(
        before, entry.name, DEGRADED if overdue else APPLYING, health.message, when, **extra
    )


def cleanup(controller: Controller, body: JSON, grace_seconds: float) -> str:
    """Delete what a deployment applied (unless orphaned); never block a gone cluster forever.

    Returns what was done, for the event. Raises TemporaryError to be retried
    while the cluster is live but unreachable, until `grace_seconds` after
    deletion started.
    """
    meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
    if spec.get("cleanupPolicy") == "Orphan":
        return "objects orphaned by policy"
    refs = [
        ObjectRef.from_json(r)
        for a in reversed(status.get("addons") or [])
        for r in a.get("inventory") or []
    ]
    if not refs:
        return "nothing was applied"
    cluster_body = controller.management.cluster(meta["namespace"], spec["cluster"])
    if cluster_body is None:
        return f"cluster {spec['cluster']} is gone; dropped the record of {len(refs)} objects"
    cluster = parse_cluster(cluster_body)
    try:
        remote = controller.remotes.for_cluster(cluster)
        applier = Applier(remote, "", "")
        deleted = applier.delete(refs)
    except FleetError as error:
        started = parse_time(meta.get("deletionTimestamp"))
        elapsed = (now() - started).total_seconds() if started else 0
        if cluster.deleting or elapsed > grace_seconds:
            return f"cluster unreachable ({error}); dropped the record of {len(refs)} objects"
        raise TemporaryError(f"cleanup of {spec['cluster']}: {error}", delay=5) from error
    return f"deleted {len(deleted)} objects"
