"""Reconcile one AddonDeployment: the add-ons of one profile on one cluster.

Fixed order, as Cluster API's ClusterResourceSet: inputs (already in the
watch caches) → cluster gates (gone, paused, not ready) → connect → render
*everything* → per add-on (dependencies first) plan and carry out → one
status patch at the end, only when it changed. Failures are contained: they
end in this deployment's status with a phase, a message and an event, never
in another deployment's.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fleet import nodelabels
from fleet.api.models import Addon, AddonEntry, Cluster, Datacenter, Profile, parse_deployment_spec
from fleet.apply import AddonOnCluster, ApplyFailed, addon_on_cluster, find_owned
from fleet.connections.cache import ClusterCache, Kubeconfig
from fleet.connections.client import (
    ApiError,
    ClusterClient,
    ClusterNotConnected,
    Fetch,
    KindNotServed,
)
from fleet.errors import FleetError, PermanentError, TemporaryError
from fleet.hashing import digest
from fleet.health import FAILED as HEALTH_FAILED
from fleet.health import RULES as HEALTH_RULES
from fleet.health import Health, health, summarize
from fleet.metrics import Metrics
from fleet.order import dependency_order
from fleet.plan import STRATEGIES, Live, ObjectKey, Record, Situation
from fleet.render.helm import ChartRendering
from fleet.render.templates import (
    Capabilities,
    ChartTemplater,
    GPUInventory,
    RenderContext,
    gpu_inventory,
    kubelet_version,
    render_addon,
    render_node_labels,
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
# A watched cluster's changes arrive as events: the full check is then a safety net.
WATCHED_RECHECK_SECONDS = 3600
# Objects named in an add-on's status problems (the CRD's maxItems).
PROBLEMS_KEPT = 10
# A profile revision not in the cache yet (written just before) is looked for again then.
WAIT_SECONDS = 1.0


@dataclass(slots=True)
class DeploymentMemo:
    """What this process remembers of one deployment; kept in kopf's per-object memo."""

    fingerprints: dict[str, dict[ObjectKey, str]] = field(default_factory=dict)
    # The add-ons as last rendered, and the digest of every input that rendering read:
    # a drift check of an unchanged deployment renders nothing.
    rendered: tuple[str, dict[str, list[JSON]]] = ("", {})
    # add-on -> digest of its objects as last rendered, and as last applied in full
    rendered_digests: dict[str, str] = field(default_factory=dict)
    applied_digests: dict[str, str] = field(default_factory=dict)
    # add-on -> (its rendered digest, default namespace) and its objects prepared
    prepared: dict[str, tuple[tuple[str, str], list[JSON]]] = field(default_factory=dict)
    # The last pass that listed every object (a drift check), and the last that read the
    # cluster afresh (its nodes; on an unwatched cluster that is a drift check too).
    last_drift_check: float = 0.0
    last_look: float = 0.0
    # (revision, kubeconfig version) the nodes were read for, the GPU inventory, capabilities
    facts: tuple[tuple[str, str], GPUInventory, Capabilities] | None = None
    health_polls: int = 0
    # A watch saw something of this deployment change: the next pass is a drift check.
    drift_due: bool = False
    # Each object's health state as last judged (a watch event that changes it matters).
    health: dict[ObjectKey, str] = field(default_factory=dict)
    # The nodes as last read, kept only when an add-on labels nodes; add-on -> the
    # revision its node labels were last put right for.
    nodes: list[JSON] | None = None
    labelled: dict[str, str] = field(default_factory=dict)
    # add-on -> (revision, what its chunked apply has applied so far)
    progress: dict[str, tuple[str, set[ObjectKey]]] = field(default_factory=dict)
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
    # Why the reconcile must wait a moment for its inputs (a cache that lags a write).
    waiting: str = ""


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
    # (cluster's capabilities, every Datacenter) -> the Helm renderer for that cluster
    charts: Callable[[Capabilities, tuple[JSON, ...]], ChartTemplater]
    record: Callable[[JSON, list[JSON]], None]
    # (namespace, cluster, ApplySet ids) -> while the cluster's watches stream and cover
    # these ApplySets (drift then shows as events), how a GET reaches it over the watches'
    # connection; None otherwise.
    streamed: Callable[[str, str, frozenset[str]], Fetch | None] = lambda _n, _c, _a: None
    max_objects: int = 10_000
    # Objects applied in one pass; a larger apply continues on the next passes.
    apply_chunk: int = 200


class _Stop(Exception):
    """Ends a reconcile early with a deployment-wide phase and message."""

    def __init__(self, phase: str, message: str, requeue: float | None) -> None:
        super().__init__(message)
        self.phase, self.message, self.requeue = phase, message, requeue


def _entry(before: JSON, name: str, phase: str, message: str, when: str, **extra: Any) -> JSON:
    kept = {
        k: v
        for k, v in before.items()
        if k in ("appliedRevision", "lastAppliedTime", "applyset", "objects", "labelledNodes")
    }
    entry = {**kept, **extra, "name": name, "phase": phase, "message": message[:1000]}
    entry["lastTransitionTime"] = (
        before.get("lastTransitionTime", when) if before.get("phase") == phase else when
    )
    return entry


def _warn_on_change(events: list[Event], before: JSON, entry: JSON, reason: str, text: str) -> None:
    """A Warning for a state an add-on enters, not again for every pass it stays in it."""
    if (before.get("phase"), before.get("message")) != (entry["phase"], entry["message"]):
        events.append(("Warning", reason, text))


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
    if inputs.waiting:
        raise _Stop(PENDING, inputs.waiting, WAIT_SECONDS)
    if inputs.problem:
        raise _Stop(FAILED, inputs.problem, None)
    return cluster


def _cluster_facts(
    client: ClusterClient,
    inputs: Inputs,
    revision: str,
    drift_check: bool,
    memo: DeploymentMemo,
    wants_api_versions: bool,
    fetch: Fetch | None,
) -> tuple[GPUInventory, Capabilities, list[JSON] | None]:
    """The cluster's GPU inventory and capabilities, as rendering sees them, and the nodes
    when they were read on this pass (None: the last read's facts were reused).

    Nodes (and, for add-ons that look at them, the served API versions) are read on
    a drift check, for a new revision or a new kubeconfig, and while the last request
    to the cluster failed (so a pass woken by the probe asks the cluster itself);
    health polls in between reuse what the last read found. `fetch`: how they are read
    on a watched cluster (over its watches' connection).
    """
    version = (revision, inputs.kubeconfig.version if inputs.kubeconfig else "")
    facts = memo.facts
    nodes = None
    if drift_check or facts is None or facts[0] != version or not client.connected:
        nodes = list(client.list(client.resource("v1", "Node"), fetch=fetch))
        served = client.api_versions(fetch) if wants_api_versions else ()
        facts = memo.facts = (
            version,
            gpu_inventory(nodes),
            Capabilities(kubelet_version(nodes), served),
        )
    return facts[1], facts[2], nodes


@contextlib.contextmanager
def _stopping_on_errors(
    engine: Engine, memo: DeploymentMemo, namespace: str, cluster: str
) -> Iterator[None]:
    """Errors before the add-ons are reached end the whole pass with a phase."""
    try:
        yield
    except ClusterNotConnected as error:
        engine.metrics.reachable(namespace, cluster, False)
        raise _Stop(UNREACHABLE, str(error), _retry(memo, error)) from error
    except TemporaryError as error:
        raise _Stop(FAILED, str(error), _retry(memo, error)) from error
    except PermanentError as error:
        raise _Stop(FAILED, str(error), None) from error


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
    # On a watched cluster drift arrives as events: a pass at the drift interval then
    # reads only the nodes, and lists every object hourly, as a safety net.
    recorded = frozenset(
        str(entry["applyset"]["id"])
        for entry in (body.get("status") or {}).get("addons") or []
        if (entry.get("applyset") or {}).get("id")
    )
    streamed = engine.streamed(meta["namespace"], deployment.cluster, recorded)
    watched = streamed is not None
    started = time.monotonic()
    look_due = started - memo.last_look >= drift_interval(meta["name"], deployment.drift_seconds)
    full_due = started - memo.last_drift_check >= drift_interval(
        meta["name"], max(deployment.drift_seconds, WATCHED_RECHECK_SECONDS)
    )
    drift_check = memo.drift_due or (look_due and (full_due or not watched))
    memo.drift_due = False
    with _stopping_on_errors(engine, memo, meta["namespace"], deployment.cluster):
        ordered = dependency_order(profile.addons)
        client = engine.connections.client(meta["namespace"], cluster.name, inputs.kubeconfig)
        revision = deployment.revision
        addons = {name: addon for name, addon in inputs.addons.items() if addon is not None}
        inventory, capabilities, nodes = _cluster_facts(
            client,
            inputs,
            revision,
            drift_check or look_due,
            memo,
            any(addon.reads_api_versions for addon in addons.values()),
            streamed,
        )
        seen = {
            "kubernetesVersion": capabilities.kube_version,
            "nodes": inventory.nodes,
            "gpuNodes": inventory.gpu_nodes,
            "gpus": inventory.total,
        }
        if inventory.products:
            seen["gpuProducts"] = dict(sorted(inventory.products.items()))
        if inventory.mig_slices:
            seen["migSlices"] = dict(sorted(inventory.mig_slices.items()))
        if inventory.replicas > 1:
            seen["gpuReplicas"] = inventory.replicas
        context = RenderContext(cluster, inputs.datacenter, inventory, capabilities)
        # The profile's add-ons as read now, too: the revision may lag a profile change.
        entries = [(e.name, e.values) for e in ordered]
        inputs_digest = digest(
            [
                deployment.revision,
                entries,
                seen,
                inventory.as_context(),
                capabilities.api_versions,
                cluster.endpoint,
            ]
        )
        if memo.rendered[0] == inputs_digest:
            rendered = memo.rendered[1]
        else:
            charts = engine.charts(capabilities, inputs.datacenters)
            # Render every add-on before applying any: a template error leaves the cluster
            # untouched. Charts new to the renderer all start rendering at once.
            rendered, charts_rendering = {}, []
            for e in ordered:
                try:
                    rendered[e.name] = render_addon(addons[e.name], e.values, context, charts)
                except ChartRendering as rendering:
                    charts_rendering.append(rendering)
            if charts_rendering:
                message = "; ".join(map(str, charts_rendering))
                raise _Stop(APPLYING, message, min(r.delay for r in charts_rendering))
            memo.rendered = (inputs_digest, rendered)
            memo.rendered_digests = {name: digest(objects) for name, objects in rendered.items()}
            # What the add-ons make changed: compare all of it with the cluster.
            drift_check = True
        total = sum(len(objects) for objects in rendered.values())
        if total > engine.max_objects:
            raise _Stop(
                FAILED,
                f"the add-ons render {total} objects, over the limit of {engine.max_objects}",
                None,
            )

    previous = _previous(body.get("status") or {})
    with _stopping_on_errors(engine, memo, meta["namespace"], deployment.cluster):
        found = _find_all(client, ordered, addons, rendered, previous, profile, meta, memo)
        if profile.sync_mode != "DryRun":
            _record_first(engine, body, found, previous, outcome)
        # Between drift checks an applied revision needs only its objects' health: only
        # the kinds that have a health rule are listed. On a watched cluster, Ready add-ons
        # need nothing listed: a change of health arrives as an event.
        health_poll = (
            not drift_check
            and profile.sync_mode != "DryRun"
            and all(
                f.desired is not None
                and previous.get(name, {}).get("appliedRevision") == deployment.revision
                for name, f in found.items()
            )
        )
        settled = (
            health_poll
            and watched
            and all(previous.get(name, {}).get("phase") == READY for name in found)
        )
        records = {
            f.on_cluster.applyset: f.covering.only(HEALTH_RULES) if health_poll else f.covering
            for f in found.values()
            if f.desired is not None and not settled
        }
        owned = find_owned(client, records, bodies=profile.sync_mode == "DryRun")
    engine.metrics.reachable(meta["namespace"], deployment.cluster, True)
    results: dict[str, JSON] = {}
    delays: list[float] = []
    for entry in ordered:
        before = previous.get(entry.name, {})
        if settled:
            results[entry.name] = before
            continue
        waiting = [d for d in entry.depends_on if results[d]["phase"] != READY]
        if waiting:
            results[entry.name] = _entry(
                before, entry.name, PENDING, f"waiting for {', '.join(waiting)}", when
            )
            continue
        addon_found = found[entry.name]
        try:
            if addon_found.desired is None:
                # Its kinds were not served before this pass: an add-on it depends on may
                # just have installed their CRDs. Prepared again, it goes on the next pass.
                namespace = addons[entry.name].default_namespace
                addon_found.on_cluster.prepare(rendered[entry.name], namespace)
                result = _entry(before, entry.name, APPLYING, "its kinds are now served", when)
                delay: float | None = 1.0
            else:
                result, delay = _reconcile_addon(
                    engine,
                    addon_found,
                    owned[addon_found.on_cluster.applyset],
                    addons[entry.name],
                    entry.name,
                    before,
                    profile,
                    deployment.revision,
                    when,
                    drift_check,
                    memo,
                    outcome.events,
                    health_poll,
                )
        except ClusterNotConnected as error:
            engine.metrics.reachable(meta["namespace"], deployment.cluster, False)
            raise _Stop(UNREACHABLE, str(error), _retry(memo, error)) from error
        except TemporaryError as error:
            result, delay = _entry(before, entry.name, APPLYING, str(error), when), error.delay
        except PermanentError as error:
            refused = (
                {"problems": [_problem(error.key, "Refused", error.reason)]}
                if isinstance(error, ApplyFailed)
                else {}
            )
            result, delay = _entry(before, entry.name, FAILED, str(error), when, **refused), None
            _warn_on_change(outcome.events, before, result, "Failed", f"{entry.name}: {error}")
        results[entry.name] = result
        if delay is not None:
            delays.append(delay)
    if profile.sync_mode != "DryRun":
        if nodes is not None and any(a.node_labels for a in addons.values()):
            memo.nodes = nodes
        for entry in ordered:
            results[entry.name] = _keep_node_labels(
                client,
                addons[entry.name],
                entry.values,
                context,
                found[entry.name].on_cluster.applyset,
                nodes,
                memo,
                results[entry.name],
                deployment.revision,
                outcome.events,
            )
    kept = _withdraw_removed(client, previous, results, profile, outcome.events, when)
    if drift_check:
        memo.last_drift_check = started
    if drift_check or look_due:
        memo.last_look = started
    unhealthy = any(r["phase"] in (APPLYING, DEGRADED) for r in results.values())
    if unhealthy and 0.0 not in delays:  # health polls wait for a chunked apply's end
        memo.health_polls += 1
        delays.append(health_poll_seconds(memo.health_polls))
    elif not unhealthy:
        memo.health_polls = 0
    delays.append(drift_interval(meta["name"], deployment.drift_seconds))
    outcome.requeue = min(delays)
    addons_now = [results[e.name] for e in profile.addons if e.name in results]
    return addons_now + kept, {"cluster": seen}


@dataclass(slots=True)
class AddonFound:
    """One add-on's objects prepared for its cluster, and the ApplySet record covering them."""

    on_cluster: AddonOnCluster
    # None: a kind of its objects is not served (yet); `covering` is then the old record.
    desired: list[JSON] | None
    record: Record
    covering: Record


def _find_all(
    client: ClusterClient,
    ordered: list[AddonEntry],
    addons: dict[str, Addon],
    rendered: dict[str, list[JSON]],
    previous: dict[str, JSON],
    profile: Profile,
    meta: JSON,
    memo: DeploymentMemo,
) -> dict[str, AddonFound]:
    """Each add-on's objects as they are applied; kept in the memo while what they are
    made from stays (a periodic look at an unchanged cluster prepares nothing)."""
    found = {}
    for entry in ordered:
        on_cluster = addon_on_cluster(
            client, meta["namespace"], meta["name"], profile.name, entry.name
        )
        record = Record.from_json(previous.get(entry.name, {}).get("applyset"))
        namespace = addons[entry.name].default_namespace
        made_from = (memo.rendered_digests.get(entry.name, ""), namespace)
        cached = memo.prepared.get(entry.name)
        desired: list[JSON] | None
        if cached is not None and cached[0] == made_from:
            desired = cached[1]
        else:
            try:
                desired = on_cluster.prepare(rendered[entry.name], namespace)
                memo.prepared[entry.name] = (made_from, desired)
            except KindNotServed:
                desired = None
        covering = record if desired is None else record.covering(desired)
        found[entry.name] = AddonFound(on_cluster, desired, record, covering)
    return found


def _record_first(
    engine: Engine,
    body: JSON,
    found: dict[str, AddonFound],
    previous: dict[str, JSON],
    outcome: Outcome,
) -> None:
    """Write every grown ApplySet record in one status patch before anything is applied.

    So a crash mid-apply never leaves an object fleet cannot find again.
    """
    grown = {name: f for name, f in found.items() if f.covering != f.record}
    if not grown:
        return
    for name, addon_found in grown.items():
        applyset = {"id": addon_found.on_cluster.applyset, **addon_found.covering.to_json()}
        current = previous.get(name, {"name": name, "phase": APPLYING, "message": ""})
        previous[name] = {**current, "applyset": applyset}
        outcome.recorded[name] = applyset
    engine.record(body, list(previous.values()))


def _health(
    desired: list[JSON], found: dict[ObjectKey, Live], memo: DeploymentMemo
) -> list[tuple[str, Health]]:
    """Each object's health, remembered in the memo for the watch events to compare."""
    states = []
    for body in desired:
        key = ObjectKey.of(body)
        live = found.get(key)
        state = health(live.body) if live else Health("Progressing", "not found")
        memo.health[key] = state.state
        states.append((str(key), state))
    return states


def _reconcile_addon(
    engine: Engine,
    found: AddonFound,
    owned: dict[ObjectKey, Live],
    addon: Addon,
    name: str,
    before: JSON,
    profile: Profile,
    revision: str,
    when: str,
    drift_check: bool,
    memo: DeploymentMemo,
    events: list[Event],
    health_poll: bool,
) -> tuple[JSON, float | None]:
    on_cluster, covering = found.on_cluster, found.covering
    desired = found.desired or []
    if health_poll:
        checked = [body for body in desired if body["kind"] in HEALTH_RULES]
        return _judged(addon, name, before, when, _health(checked, owned, memo), {}), None
    known = memo.fingerprints.setdefault(name, {})
    rendered_digest = memo.rendered_digests.get(name, "")
    situation = Situation(
        desired=tuple(desired),
        live=owned,
        foreign=on_cluster.foreign(desired, owned),
        adopt=addon.adopt,
        revision=revision,
        applied_revision=str(before.get("appliedRevision") or ""),
        known=known,
        drift_check=drift_check,
        rendering_changed=memo.applied_digests.get(name, rendered_digest) != rendered_digest,
    )
    plan = STRATEGIES[profile.sync_mode].plan(situation)
    applyset = {"id": on_cluster.applyset, **covering.to_json()}
    if plan.conflicts:
        message = (
            "; ".join(plan.conflicts)
            + ": nothing was applied; set spec.adopt: true on the Addon to take them over"
        )
        problems = [
            _problem(key, "Conflict", f"not created by this add-on; managers: {', '.join(m)}")
            for key, m in sorted(situation.foreign.items())
        ]
        result = _entry(
            before,
            name,
            FAILED,
            message,
            when,
            applyset=applyset,
            problems=problems[:PROBLEMS_KEPT],
        )
        _warn_on_change(events, before, result, "Conflict", f"{name}: {message}")
        return result, None
    if profile.sync_mode == "DryRun" and not plan.dry_run:
        # Nothing compared on this pass: the last dry run's verdict stands (its objects
        # were never applied, so their health says nothing).
        phase, message = before.get("phase", PENDING), before.get("message", "")
        return _entry(before, name, phase, message, when, drift=before.get("drift") or []), None
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
    found_now = dict(owned)
    if plan.apply:
        done_revision, done = memo.progress.get(name, ("", set()))
        if done_revision != revision:
            done = set()
        # Objects an earlier pass of this revision applied, and nobody changed since, are done.
        remaining = [
            body
            for body in plan.apply
            if (key := ObjectKey.of(body)) not in done
            or key not in owned
            or owned[key].fingerprint != known.get(key)
        ]
        try:
            applied = on_cluster.apply(remaining[: engine.apply_chunk])
        except ApplyFailed as error:
            for live in error.applied:
                known[live.key] = live.fingerprint
            raise
        for live in applied:
            known[live.key] = live.fingerprint
            done.add(live.key)
            found_now[live.key] = live
        engine.metrics.applied(len(applied), 0)
        extra["lastAppliedTime"] = when
        if len(remaining) > engine.apply_chunk:
            # A large apply goes on in chunks, each a pass of its own: the worker is free
            # for other deployments in between.
            memo.progress[name] = (revision, done)
            message = f"applied {len(plan.apply) - len(remaining) + len(applied)} of "
            message += f"{len(plan.apply)} objects"
            return _entry(before, name, APPLYING, message, when, **extra), 0.0
        memo.progress.pop(name, None)
    if plan.drift and plan.apply:
        engine.metrics.drift_corrected(len(plan.drift))
        events.append(("Warning", "DriftCorrected", f"{name}: corrected {'; '.join(plan.drift)}"))
        extra["drift"] = list(plan.drift)
    elif plan.applies_revision:
        extra["drift"] = []
    if plan.prune:
        pruned = on_cluster.delete(plan.prune)
        for key in pruned:
            found_now.pop(key, None)
            known.pop(key, None)
            memo.health.pop(key, None)
        engine.metrics.applied(0, len(pruned))
        if pruned:
            events.append(("Normal", "Pruned", f"{name}: pruned {', '.join(map(str, pruned))}"))
    if plan.applies_revision:
        extra["appliedRevision"] = revision
    if profile.sync_mode == "Continuous":
        memo.applied_digests[name] = rendered_digest
    extra["objects"] = len(desired)
    return _judged(addon, name, before, when, _health(desired, found_now, memo), extra), None


def _keep_node_labels(
    client: ClusterClient,
    addon: Addon,
    values: JSON,
    context: RenderContext,
    applyset: str,
    fresh: list[JSON] | None,
    memo: DeploymentMemo,
    result: JSON,
    revision: str,
    events: list[Event],
) -> JSON:
    """Put the add-on's node labels right once its objects are applied at this revision:
    on the first pass that finds them applied, and whenever the nodes were read afresh
    (a drift check). The entry records the nodes labelled, so that withdrawing the
    add-on finds them. `fresh`: the nodes when this pass read them."""
    applied = result.get("appliedRevision") == revision and result["phase"] != FAILED
    if not applied or not (addon.node_labels or result.get("labelledNodes")):
        return result
    nodes = fresh if fresh is not None else memo.nodes
    if nodes is None or (fresh is None and memo.labelled.get(addon.name) == revision):
        return result
    field_manager = nodelabels.manager(applyset)
    try:
        wanted = render_node_labels(addon, values, context)
        todo = nodelabels.changes(nodes, dict(addon.node_selector), wanted, field_manager)
        _label(client, todo, field_manager)
    except TemporaryError as error:
        memo.facts = None  # the nodes changed meanwhile: read them again on the next pass
        return result | {"phase": APPLYING, "message": f"node labels: {error}"[:1000]}
    except PermanentError as error:
        message = f"node labels: {error}"[:1000]
        events.append(("Warning", "Failed", f"{addon.name}: {message}"))
        return result | {"phase": FAILED, "message": message}
    memo.labelled[addon.name] = revision
    if todo:
        changed = ", ".join(change.node for change in todo)
        events.append(("Normal", "NodesLabelled", f"{addon.name}: labels set on {changed}"))
    target = {key: value for key, value in wanted.items() if value}
    selector = dict(addon.node_selector)
    names = [
        n["metadata"]["name"]
        for n in nodes
        if target and nodelabels.selected(n["metadata"].get("labels") or {}, selector)
    ]
    entry = {k: v for k, v in result.items() if k != "labelledNodes"}
    return entry | ({"labelledNodes": sorted(names)} if names else {})


def _label(client: ClusterClient, todo: list[nodelabels.NodeLabelling], field_manager: str) -> None:
    resource = client.resource("v1", "Node")
    for change in todo:
        try:
            client.apply(resource, change.body(), force=True, field_manager=field_manager)
        except ApiError as error:
            if error.code == 409:
                raise TemporaryError(f"node {change.node} changed meanwhile", delay=1) from error
            raise


def _unlabel(client: ClusterClient, entry: JSON) -> None:
    """Take the add-on's labels off every node that has them."""
    if not entry.get("labelledNodes") or not entry.get("applyset"):
        return
    field_manager = nodelabels.manager(entry["applyset"]["id"])
    nodes = list(client.list(client.resource("v1", "Node")))
    _label(client, nodelabels.changes(nodes, {}, {}, field_manager), field_manager)


def _problem(key: object, reason: str, message: str) -> JSON:
    return {"object": str(key), "reason": reason, "message": message[:300]}


def _judged(
    addon: Addon, name: str, before: JSON, when: str, states: list[tuple[str, Health]], extra: JSON
) -> JSON:
    """The add-on's entry for its objects' health: Degraded once overdue."""
    state = summarize(states)
    problems = [_problem(key, s.state, s.message) for key, s in states if not s.ready]
    if problems:
        extra = {**extra, "problems": problems[:PROBLEMS_KEPT]}
    if state.ready:
        return _entry(before, name, READY, "", when, **extra)
    if state.state == HEALTH_FAILED:
        return _entry(before, name, DEGRADED, state.message, when, **extra)
    applied_at = parse_time(extra.get("lastAppliedTime") or before.get("lastAppliedTime"))
    overdue = applied_at and (now() - applied_at).total_seconds() > addon.health_timeout_seconds
    return _entry(before, name, DEGRADED if overdue else APPLYING, state.message, when, **extra)


def _withdraw_removed(
    client: ClusterClient,
    previous: dict[str, JSON],
    results: dict[str, JSON],
    profile: Profile,
    events: list[Event],
    when: str,
) -> list[JSON]:
    """Delete the objects of add-ons that left the profile (unless the policy orphans them).

    A dry run deletes nothing: it returns their entries, kept in the status with their
    ApplySet records until a sync mode that applies withdraws them.
    """
    kept = []
    for name, entry in previous.items():
        if name in results or not entry.get("applyset"):
            continue
        if profile.sync_mode == "DryRun":
            message = "left the profile: dry run, its objects would be deleted"
            kept.append(_entry(entry, name, PENDING, message, when))
        elif profile.cleanup_policy == "Orphan":
            events.append(("Normal", "Orphaned", f"{name} left the profile; objects kept"))
        else:
            _unlabel(client, entry)
            deleted = _delete_owned(client, entry["applyset"])
            message = f"{name} left the profile: deleted {len(deleted)} objects"
            events.append(("Normal", "Withdrawn", message))
    return kept


def _delete_owned(client: ClusterClient, applyset: JSON) -> list[ObjectKey]:
    on_cluster = AddonOnCluster(client, applyset["id"], "")
    return on_cluster.delete(on_cluster.owned(Record.from_json(applyset)).values())


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
    entries = [a for a in reversed(status.get("addons") or []) if a.get("applyset")]
    if not entries:
        return "nothing was applied"
    cluster = inputs.cluster
    if cluster is None:
        return f"cluster {spec['cluster']} is gone; nothing to delete from"
    try:
        client = engine.connections.client(meta["namespace"], cluster.name, inputs.kubeconfig)
        deleted = []
        for entry in entries:
            _unlabel(client, entry)
            deleted += _delete_owned(client, entry["applyset"])
    except FleetError as error:
        started = parse_time(meta.get("deletionTimestamp"))
        elapsed = (now() - started).total_seconds() if started else 0
        if cluster.deleting or elapsed > grace_seconds:
            return f"cluster unreachable ({error}); gave up deleting its objects"
        raise TemporaryError(f"cleanup of {spec['cluster']}: {error}", delay=5) from error
    return f"deleted {len(deleted)} objects"
