"""The controller's running parts: caches, the work queue, its workers, the probes.

Each queued key is handled in two halves: its inputs are read from kopf's
indexes on the event loop (where the indexes are written, so reads never
race a write), then the I/O — workload clusters, management writes — runs
in a worker thread. One key is never handled twice at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes.client.exceptions import ApiException

from fleet import drift
from fleet.api import APPLYSET_LABEL, CLEANUP_FINALIZER, CLUSTER_FINALIZER
from fleet.api.models import (
    Addon,
    Cluster,
    InvalidSpec,
    parse_addon,
    parse_datacenter,
    parse_profile,
)
from fleet.connections.cache import ClusterCache, Kubeconfig
from fleet.connections.client import Fetch, KindNotServed
from fleet.connections.watches import WatchHub, WatchSpec
from fleet.controller import deployments as reconciling
from fleet.controller import profiles as selecting
from fleet.controller.assignments import Assigner
from fleet.controller.copier import Copier
from fleet.controller.deployments import DeploymentMemo, Engine, Inputs
from fleet.controller.management import Management
from fleet.controller.models import ModelInputs, Models
from fleet.controller.queue import WorkQueue
from fleet.errors import FleetError, PermanentError, TemporaryError
from fleet.metrics import Metrics
from fleet.plan import ObjectKey
from fleet.render.helm import HELM_TIMEOUT, ChartRendering, HelmRenderer, RegistryAccess
from fleet.render.templates import Capabilities, ChartTemplater
from fleet.status import DELETING, FAILED, READY, backoff_seconds

JSON = dict[str, Any]
log = logging.getLogger("fleet.controller")
WORKERS = 16
CREATORS = 4
# `helm template` processes at once, and how long a failed run stands before it is retried
HELM_JOBS = 2
CHART_RETRY = 30.0
CLEANUP_GRACE_SECONDS = 60.0
GAUGE_SECONDS = 10.0
# A cluster nobody talked to for QUIET_SECONDS is probed; probes are looked for every
# PROBE_SECONDS, so an outage shows within QUIET_SECONDS + PROBE_SECONDS. Under the API
# server's 90 s idle timeout: the connection stays open, and neither a probe nor a drift
# check pays a new TLS handshake (2.8 ms of CPU against 0.7 ms for the probe, measured).
PROBE_SECONDS = 15.0
QUIET_SECONDS = 60.0
# The watches wanted are worked out from the deployments' ApplySet records this often;
# an event checks its deployments this long after it (events of one apply come together).
WATCH_SYNC_SECONDS = 10.0
EVENT_DELAY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class WatchSet:
    """What one cluster's watches were started for: its kubeconfig's version, and for each
    apiVersion/Kind the ApplySet ids and the namespaces their records name."""

    kubeconfig: str
    kinds: frozenset[tuple[str, frozenset[str], frozenset[str]]]
    # Every ApplySet id covered (asked for on every pass of a deployment: worked out once)
    ids: frozenset[str] = field(compare=False, default=frozenset())

    @classmethod
    def of(cls, kubeconfig: str, kinds: dict[str, tuple[set[str], set[str]]]) -> WatchSet:
        return cls(
            kubeconfig,
            frozenset((kind, frozenset(i), frozenset(n)) for kind, (i, n) in kinds.items()),
            frozenset(i for ids, _ in kinds.values() for i in ids),
        )


@dataclass(slots=True)
class Runtime:
    management: Management
    metrics: Metrics
    helm: str | None = None
    connections: ClusterCache = field(default_factory=ClusterCache)
    indexes: dict[str, Any] = field(default_factory=dict)
    memos: dict[Hashable, DeploymentMemo] = field(default_factory=dict)
    _queue: WorkQueue | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _pool: concurrent.futures.ThreadPoolExecutor | None = None
    _helm: HelmRenderer | None = None
    _chart_pool: concurrent.futures.ThreadPoolExecutor | None = None
    # helm-template input -> its run and when it started (failed runs are kept a while)
    _chart_jobs: dict[str, tuple[concurrent.futures.Future[list[JSON]], float]] = field(
        default_factory=dict
    )
    _chart_lock: threading.Lock = field(default_factory=threading.Lock)
    watches: WatchHub | None = None
    # What each cluster's streams were started for; (deployment, add-on) of each ApplySet id
    _watch_sets: dict[tuple[str, str], WatchSet] = field(default_factory=dict)
    _applysets: dict[str, tuple[Hashable, str]] = field(default_factory=dict)
    # Something the watches are worked out from changed since the last sync
    _watches_stale: bool = True
    # Read-your-writes for the profile passes, whose caches may not have seen the last
    # write yet: deployments as written (by namespace, name; kept while newer than the
    # cache's), and each profile's rollout record as last written (by namespace, name, uid).
    _written: dict[tuple[str, str], JSON] = field(default_factory=dict)
    _records: dict[tuple[str, str, str], JSON | None] = field(default_factory=dict)
    # ModelArtifacts: their copies run on the copier's own loop and thread
    _models: Models | None = None

    # Life cycle

    def start(self, loop: asyncio.AbstractEventLoop, indexes: dict[str, Any]) -> None:
        self._loop = loop
        self.indexes = indexes
        self._queue = WorkQueue(loop)
        self._pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="reconcile")
        self._chart_pool = concurrent.futures.ThreadPoolExecutor(
            HELM_JOBS, thread_name_prefix="helm"
        )
        self._tasks = [loop.create_task(self._queue.worker(self._handle)) for _ in range(WORKERS)]
        self._tasks += [loop.create_task(self._every(GAUGE_SECONDS, self._count_gauges))]
        self._tasks += [loop.create_task(self._every(PROBE_SECONDS, self._probe))]
        self.watches = WatchHub(self._watch_event, self._watch_lost)
        self.watches.start()
        copier = Copier(lambda key: self.queue.add(("model", key[0], key[1])))
        copier.start()
        self._models = Models(
            self.management,
            self.metrics,
            copier,
            self.connections,
            self._event,
            Assigner(self.connections),
        )
        self._tasks += [loop.create_task(self._every(WATCH_SYNC_SECONDS, self._sync_watches))]

    def stop(self) -> None:
        if self.watches is not None:
            self.watches.stop()
        if self._models is not None:
            self._models.copier.stop()
        for task in self._tasks:
            task.cancel()
        for pool in (self._pool, self._chart_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    @property
    def queue(self) -> WorkQueue:
        if self._queue is None:
            raise RuntimeError("the controller runtime has not started")
        return self._queue

    async def _every(self, seconds: float, job: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                result = job()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.warning("background job %s failed", job.__name__, exc_info=True)

    async def _io(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    async def _io_delay(self, function: Callable[..., float | None], *args: Any) -> float | None:
        """Run I/O that ends in when to look again."""
        delay: float | None = await self._io(function, *args)
        return delay

    # Reading the caches (on the loop only)

    def _values(self, index: str, key: Hashable) -> list[Any]:
        found = self.indexes.get(index)
        if found is None or key not in found:
            return []
        return list(found[key])

    def _one(self, index: str, key: Hashable) -> Any:
        values = self._values(index, key)
        return values[0] if values else None

    def profiles_of(self, namespace: str) -> list[JSON]:
        return [
            p
            for k in list(self.indexes.get("profiles", {}))
            if k[0] == namespace
            for p in self._values("profiles", k)
        ]

    def all_profiles(self) -> list[JSON]:
        return [
            p for k in list(self.indexes.get("profiles", {})) for p in self._values("profiles", k)
        ]

    def rolls_out(self, namespace: str, name: str) -> bool:
        """Whether the profile moves its clusters by a rollout (`spec.rollout`)."""
        body = self._one("profiles", (namespace, name))
        return body is not None and (body.get("spec") or {}).get("rollout") is not None

    def cluster_deleting(self, namespace: str, name: str) -> bool:
        cluster: Cluster | None = self._one("clusters", (namespace, name))
        return cluster is not None and cluster.deleting

    def wake_deployments_of(self, namespace: str, cluster: str) -> None:
        for name in self._values("deployments_by_owner", ("cluster", namespace, cluster)):
            self.queue.add(("deployment", namespace, name))

    def remember_deployment(self, key: Hashable, memo: Any) -> None:
        if not hasattr(memo, "deployment"):
            memo.deployment = DeploymentMemo()
        self.memos[key] = memo.deployment

    def forget_deployment(self, key: Hashable) -> None:
        _, namespace, name = cast(tuple[str, str, str], key)
        self._written.pop((namespace, name), None)
        self.memos.pop(key, None)
        self.queue.forget(key)

    # Handling one key

    async def _handle(self, key: Hashable) -> float | None:
        kind, namespace, name = cast(tuple[str, str, str], key)
        if kind == "profile":
            return await self._profile(namespace, name)
        if kind == "deployment":
            return await self._deployment(key, namespace, name)
        if kind == "model":
            return await self._model(namespace, name)
        return await self._release_cluster(namespace, name)

    async def _model(self, namespace: str, name: str) -> float | None:
        if self._models is None:
            raise RuntimeError("the controller runtime has not started")
        body = self._one("models", (namespace, name))
        if body is None:
            self._models.forget(namespace, name)
            return None
        clusters: list[Cluster] = self._values("clusters_by_namespace", namespace)
        kubeconfigs = {c.name: self._one("kubeconfigs", (namespace, c.name)) for c in clusters}
        if body["metadata"].get("deletionTimestamp"):
            self._models.forget(namespace, name)
            return await self._io_delay(self._models.release, body, kubeconfigs)
        datacenters = {
            c.datacenter: parse_datacenter(found)
            if (found := self._one("datacenters", c.datacenter))
            else None
            for c in clusters
            if c.datacenter
        }
        inputs = ModelInputs(body, clusters, datacenters, kubeconfigs)
        return await self._io_delay(self._models.reconcile, inputs)

    def models_of(self, namespace: str | None) -> list[tuple[str, str]]:
        """(namespace, name) of the ModelArtifacts of a namespace, or of all."""
        return [k for k in list(self.indexes.get("models", {})) if namespace in (None, k[0])]

    async def _profile(self, namespace: str, name: str) -> float | None:
        body = self._one("profiles", (namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            for gone in [k for k in self._records if k[:2] == (namespace, name)]:
                del self._records[gone]
            return None
        clusters: list[Cluster] = self._values("clusters_by_namespace", namespace)
        addon_specs = {}
        for entry in body.get("spec", {}).get("addons") or []:
            addon = self._one("addons", (namespace, entry.get("name")))
            addon_specs[entry.get("name")] = addon["spec"] if addon else None
        datacenters = {}
        for cluster in clusters:
            found = self._one("datacenters", cluster.datacenter) if cluster.datacenter else None
            datacenters[cluster.datacenter] = found["spec"] if found else None
        existing = {
            n: self._newest(namespace, n, d)
            for n in self._values("deployments_by_owner", ("profile", namespace, name))
            if (d := self._one("deployments", (namespace, n))) is not None
        }
        key = (namespace, name, body["metadata"]["uid"])
        record = self._records.get(key, (body.get("status") or {}).get("rollout"))
        snapshots = {s.hash: s for s in self._values("revisions", (namespace, name))}
        history = selecting.History(snapshots, record, time.time())
        decision = await self._io(
            selecting.decide, body, clusters, addon_specs, datacenters, existing, history
        )
        return await self._io_delay(self._carry_out_profile, body, decision)

    def _newest(self, namespace: str, name: str, cached: JSON) -> JSON:
        """A deployment as the cache has it, or as last written when the cache lags."""
        written = self._written.get((namespace, name))
        if written is None:
            return cached
        if written["metadata"].get("generation", 0) > cached["metadata"].get("generation", 0):
            return written
        del self._written[(namespace, name)]
        return cached

    def _carry_out_profile(self, body: JSON, decision: selecting.Decision) -> float | None:
        meta = body["metadata"]
        namespace = meta["namespace"]

        def create(wanted: JSON) -> None:
            created = self.management.create("addondeployments", namespace, wanted)
            if created is not None:
                self._written[(namespace, wanted["metadata"]["name"])] = created
            log.info("created AddonDeployment %s/%s", namespace, wanted["metadata"]["name"])

        # A deployment may move to a revision only once the revision is kept.
        if decision.snapshot is not None:
            self.management.create_revision(decision.snapshot)
        # A new profile over 1,000 clusters is 1,000 creations: a few at a time, not in a row.
        with concurrent.futures.ThreadPoolExecutor(CREATORS) as creators:
            list(creators.map(create, decision.create))
        for name, change in decision.update.items():
            written = self.management.patch("addondeployments", namespace, name, change)
            self._written[(namespace, name)] = written
        for name in decision.prune:
            self.management.delete_revision(namespace, name)
        for name in decision.delete:
            self.management.delete("addondeployments", namespace, name)
            log.info("deleting AddonDeployment %s/%s: cluster no longer selected", namespace, name)
        retry = None
        for cluster in decision.finalize:
            finalizers = [*cluster.finalizers, CLUSTER_FINALIZER]
            if not self.management.set_cluster_finalizers(cluster, finalizers):
                retry = 1.0
        current = body.get("status") or {}
        patch = selecting.status_patch(current, decision.status)
        if patch is not None:
            self.management.patch_status("addonprofiles", namespace, meta["name"], patch)
            before = {c["type"]: c.get("message") for c in current.get("conditions") or []}
            for kind, reason, message in decision.events:
                if before.get("RemovalBlocked") != message:
                    self._event(body, kind, reason, message)
        if "rollout" in decision.status:
            self._records[(namespace, meta["name"], meta["uid"])] = decision.status["rollout"]
        for kind, reason, message in decision.rollout_events:
            self._event(body, kind, reason, message)
        delays = [d for d in (retry, decision.requeue) if d is not None]
        return min(delays, default=None)

    def _inputs(self, body: JSON) -> Inputs:
        namespace, spec = body["metadata"]["namespace"], body["spec"]
        cluster: Cluster | None = self._one("clusters", (namespace, spec["cluster"]))
        profile_body = self._one("profiles", (namespace, spec["profile"]))
        problem = waiting = ""
        profile = None
        addons: dict[str, Addon | None] = {}
        try:
            if profile_body is None:
                problem = f"AddonProfile {namespace}/{spec['profile']} not found"
            else:
                profile_body, addon_bodies = self._revision(profile_body, spec)
                if addon_bodies is None:
                    waiting = (
                        f"revision {spec['profileRevision']} of AddonProfile "
                        f"{namespace}/{spec['profile']} is not in the cache yet"
                    )
                    addon_bodies = {}
                profile = parse_profile(profile_body)
                for entry in profile.addons:
                    addon_body = addon_bodies.get(entry.name)
                    addons[entry.name] = parse_addon(addon_body) if addon_body else None
                missing = [n for n, a in addons.items() if a is None]
                if missing and not waiting:
                    problem = f"Addon {', '.join(f'{namespace}/{m}' for m in missing)} not found"
        except InvalidSpec as error:
            problem = str(error)
        datacenter = None
        if cluster is not None and cluster.datacenter:
            found = self._one("datacenters", cluster.datacenter)
            datacenter = parse_datacenter(found) if found else None
        kubeconfig = self._one("kubeconfigs", (namespace, spec["cluster"]))
        every = tuple(
            d
            for k in list(self.indexes.get("datacenters", {}))
            for d in self._values("datacenters", k)
        )
        return Inputs(
            body, cluster, profile, addons, datacenter, kubeconfig, problem, every, waiting
        )

    def _revision(self, profile_body: JSON, spec: JSON) -> tuple[JSON, dict[str, JSON] | None]:
        """The profile and Addon bodies of the revision a deployment is on (None: that
        revision is not in the cache yet); without one (made before revisions were
        kept), the profile and Addons as they are now."""
        namespace = profile_body["metadata"]["namespace"]
        wanted = spec.get("profileRevision")
        if not wanted:
            names = [e.get("name") for e in profile_body["spec"].get("addons") or []]
            found = {n: self._one("addons", (namespace, n)) for n in names}
            return profile_body, {n: b for n, b in found.items() if b is not None}
        snapshot = next(
            (
                s
                for s in self._values("revisions", (namespace, spec["profile"]))
                if s.hash == wanted
            ),
            None,
        )
        if snapshot is None:
            return profile_body, None
        frozen = {**profile_body, "spec": {**profile_body["spec"], "addons": snapshot.addons}}
        addon_bodies = {
            name: {
                "kind": "Addon",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            }
            for name, spec in snapshot.addon_specs.items()
            if spec is not None
        }
        return frozen, addon_bodies

    async def _deployment(self, key: Hashable, namespace: str, name: str) -> float | None:
        body = self._one("deployments", (namespace, name))
        if body is None:
            return None
        memo = self.memos.setdefault(key, DeploymentMemo())
        inputs = self._inputs(body)
        charts = functools.partial(self._charts, key)
        engine = Engine(self.connections, self.metrics, charts, self._record, self._streamed)
        if body["metadata"].get("deletionTimestamp"):
            return await self._io_delay(self._clean_up, engine, inputs)
        started = time.monotonic()
        try:
            outcome = await self._io(reconciling.reconcile, engine, inputs, memo)
        except Exception as error:
            # Never fail silently: what the controller did not foresee still ends in
            # a phase, a message and an event.
            log.exception("reconciling %s/%s failed", namespace, name)
            self.metrics.errors.labels(type(error).__name__).inc()
            memo.failures += 1
            message = (
                f"internal error: {type(error).__name__}: {error} (the controller log has details)"
            )
            outcome = reconciling.Outcome(
                {"phase": FAILED, "message": message[:500]},
                [("Warning", "InternalError", message[:500])],
                backoff_seconds(memo.failures),
            )
        await self._io(self._write_outcome, body, outcome)
        self.metrics.reconcile_seconds.labels(
            (outcome.status or body.get("status") or {}).get("phase", "unknown")
        ).observe(time.monotonic() - started)
        requeue: float | None = outcome.requeue
        return requeue

    def _write_outcome(self, body: JSON, outcome: reconciling.Outcome) -> None:
        meta = body["metadata"]
        if outcome.status is not None:
            self.management.patch_status(
                "addondeployments", meta["namespace"], meta["name"], outcome.status
            )
        for kind, reason, message in outcome.events:
            self._event(body, kind, reason, message)

    def _record(self, body: JSON, entries: list[JSON]) -> None:
        """Write the ApplySet records before applying, so a crash orphans nothing."""
        meta = body["metadata"]
        self.management.patch_status(
            "addondeployments", meta["namespace"], meta["name"], {"addons": entries}
        )

    def _clean_up(self, engine: Engine, inputs: Inputs) -> float | None:
        body = inputs.body
        meta = body["metadata"]
        if (body.get("status") or {}).get("phase") != DELETING:
            self.management.patch_status(
                "addondeployments",
                meta["namespace"],
                meta["name"],
                {"phase": DELETING, "message": "removing the add-ons' objects from the cluster"},
            )
        try:
            done = reconciling.cleanup(engine, inputs, CLEANUP_GRACE_SECONDS)
        except TemporaryError as error:
            self.management.patch_status(
                "addondeployments", meta["namespace"], meta["name"], {"message": str(error)}
            )
            return error.delay
        self._event(body, "Normal", "CleanedUp", done)
        finalizers = [f for f in meta.get("finalizers") or [] if f != CLEANUP_FINALIZER]
        if not self.management.set_finalizers("addondeployments", meta, finalizers):
            return 1.0
        return None

    async def _release_cluster(self, namespace: str, name: str) -> float | None:
        cluster: Cluster | None = self._one("clusters", (namespace, name))
        if cluster is None or not cluster.deleting:
            return None
        remaining = [
            d
            for n in self._values("deployments_by_owner", ("cluster", namespace, name))
            if (d := self._one("deployments", (namespace, n))) is not None
        ]
        return await self._io_delay(self._release, cluster, remaining)

    def _release(self, cluster: Cluster, remaining: list[JSON]) -> float | None:
        for deployment in remaining:
            if not deployment["metadata"].get("deletionTimestamp"):
                self.management.delete(
                    "addondeployments", cluster.namespace, deployment["metadata"]["name"]
                )
        if remaining or CLUSTER_FINALIZER not in cluster.finalizers:
            return None
        left = [f for f in cluster.finalizers if f != CLUSTER_FINALIZER]
        return None if self.management.set_cluster_finalizers(cluster, left) else 1.0

    # Helpers

    def _event(self, body: JSON, kind: str, reason: str, message: str) -> None:
        try:
            self.management.event(body, kind, reason, message)
        except (ApiException, OSError):
            log.warning(
                "could not post event %s on %s", reason, body["metadata"]["name"], exc_info=True
            )

    def _charts(
        self, key: Hashable, capabilities: Capabilities, datacenters: tuple[JSON, ...]
    ) -> ChartTemplater:
        """Helm add-ons for deployment `key`: rendered in the background, never in a worker.

        A chart input rendered before comes from the renderer's cache; a new one starts
        `helm template` on the chart pool and ends this pass with ChartRendering; the
        deployment is queued again when helm is done.
        """

        def template(addon: Addon, values: JSON) -> list[JSON]:
            if self.helm is None:
                raise PermanentError(
                    f"add-on {addon.name}: helm add-ons need the helm binary: "
                    "start the controller with --helm or FLEET_HELM, or put helm on PATH"
                )
            if self._helm is None:
                self._helm = HelmRenderer(self.helm)
            found = self._helm.rendered(addon, values, capabilities)
            if found is not None:
                return found
            access = self.management.registry_access(addon.require_chart().repository, datacenters)
            job = self._chart_job(self._helm, addon, values, capabilities, access)
            failure = job.exception() if job.done() else None
            if failure is not None:
                raise failure
            job.add_done_callback(lambda _: self.queue.add(key))
            chart = addon.require_chart()
            raise ChartRendering(
                f"add-on {addon.name}: rendering chart {chart.name} {chart.version}",
                delay=HELM_TIMEOUT,
            )

        return template

    def _chart_job(
        self,
        helm: HelmRenderer,
        addon: Addon,
        values: JSON,
        capabilities: Capabilities,
        access: RegistryAccess,
    ) -> concurrent.futures.Future[list[JSON]]:
        """The `helm template` run for this input: running, failed lately, or started now."""
        job_key = helm.key(addon, values, capabilities)
        with self._chart_lock:
            job, started = self._chart_jobs.get(job_key, (None, 0.0))
            retry = job is not None and job.done() and time.monotonic() - started > CHART_RETRY
            if job is None or retry:
                if self._chart_pool is None:
                    raise RuntimeError("the controller runtime has not started")
                job = self._chart_pool.submit(helm.template, addon, values, capabilities, access)
                self._chart_jobs[job_key] = (job, time.monotonic())
                job.add_done_callback(lambda done: self._chart_done(job_key, done))
            return job

    def _chart_done(self, job_key: str, job: concurrent.futures.Future[list[JSON]]) -> None:
        """A rendered chart lives in the renderer's cache; only failures are kept here."""
        if job.exception() is None:
            with self._chart_lock:
                self._chart_jobs.pop(job_key, None)

    def _count_gauges(self) -> None:
        """AddonDeployments by phase, and every cluster's GPUs as its deployments last saw."""
        phases = []
        gpus: dict[tuple[str, str, str, str], int] = {}
        for k in list(self.indexes.get("deployments", {})):
            for d in self._values("deployments", k):
                status = d.get("status") or {}
                phases.append(status.get("phase") or "Pending")
                namespace, cluster = d["metadata"]["namespace"], d["spec"]["cluster"]
                found = self._one("clusters", (namespace, cluster))
                datacenter = found.datacenter if found else ""
                for product, count in (
                    (status.get("cluster") or {}).get("gpuProducts") or {}
                ).items():
                    gpus[(namespace, cluster, datacenter, product)] = int(count)
        self.metrics.count_phases(phases)
        self.metrics.count_gpus(gpus)
        if self.watches is not None:
            self.metrics.watched_clusters.set(self.watches.watched_count())

    async def _probe(self) -> None:
        """Probe clusters nobody heard from lately; wake their deployments when that changed.

        A cluster whose watches stream needs no probe (a failing stream says it went);
        its request connection is closed instead, so that it holds only the watches'
        one while it is idle."""
        for (namespace, cluster), client in self.connections.quiet_since(QUIET_SECONDS):
            if self._watched(namespace, cluster):
                client.release_connections()
                continue
            was = client.connected
            with contextlib.suppress(FleetError):
                await self._io(client.version)
            if client.connected != was:
                self.metrics.reachable(namespace, cluster, client.connected)
                self.wake_deployments_of(namespace, cluster)

    # Watching the workload clusters

    def _watched(self, namespace: str, cluster: str) -> bool:
        return self.watches is not None and self.watches.watching((namespace, cluster))

    def _streamed(self, namespace: str, cluster: str, applysets: frozenset[str]) -> Fetch | None:
        """How a GET reaches a cluster over its watches' connection, while they stream and
        cover these ApplySets."""
        hub, key = self.watches, (namespace, cluster)
        watch_set = self._watch_sets.get(key)
        if hub is None or watch_set is None or not applysets or not hub.watching(key):
            return None
        if not applysets <= watch_set.ids:
            return None

        def fetch(url: str, accept: str) -> tuple[int, str, bytes]:
            self.metrics.watch_fetches.inc()
            return hub.fetch((namespace, cluster), url, accept)

        return fetch

    def _watch_event(self, cluster: tuple[str, str], event_type: str, body: JSON) -> None:
        """On the watch thread: wake the deployment of an object whose change it must see.

        Reads the deployment's memo, which its reconcile writes from a worker thread;
        a stale read costs at most one drift check."""
        applyset = (body["metadata"].get("labels") or {}).get(APPLYSET_LABEL, "")
        owner = self._applysets.get(applyset)
        memo = self.memos.get(owner[0]) if owner is not None else None
        if owner is None or memo is None:
            return
        key = ObjectKey.of(body)
        known = memo.fingerprints.get(owner[1], {}).get(key)
        if not drift.matters(event_type, body, drift.Recorded(known, memo.health.get(key))):
            return
        self.metrics.watch_events.inc()
        memo.drift_due = True
        self.queue.add_after(owner[0], EVENT_DELAY_SECONDS)

    def _watch_lost(self, cluster: tuple[str, str]) -> None:
        """On the watch thread: a stream of the cluster failed (it is retried). The
        cluster's deployments look now, and say Unreachable if it is down."""
        self.metrics.watches_lost.inc()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.wake_deployments_of, *cluster)

    def rewatch(self) -> None:
        """A deployment, Cluster or kubeconfig changed: work the watches out again."""
        self._watches_stale = True

    async def _sync_watches(self) -> None:
        """Watch, on every cluster that has deployments (paused ones aside), the kinds their
        ApplySet records name, label-selected on their ids.

        A deployment is watched from the first time it is Ready, and from then on: while it
        converges, its objects change all the time (fleet's applies, their status) and
        its passes look at them anyway. A stream starts from the full list, so nothing
        that changed before is missed."""
        if not self._watches_stale:
            return
        self._watches_stale = False
        wanted: dict[tuple[str, str], dict[str, tuple[set[str], set[str]]]] = {}
        applysets: dict[str, tuple[Hashable, str]] = {}
        for k in list(self.indexes.get("deployments", {})):
            for body in self._values("deployments", k):
                meta = body["metadata"]
                cluster = (meta["namespace"], body["spec"]["cluster"])
                found: Cluster | None = self._one("clusters", cluster)
                if found is None or found.paused or meta.get("deletionTimestamp"):
                    continue
                kinds = wanted.setdefault(cluster, {})
                status = body.get("status") or {}
                ready = status.get("phase") == READY
                for entry in status.get("addons") or []:
                    record = entry.get("applyset") or {}
                    if not record.get("id") or not (ready or record["id"] in self._applysets):
                        continue
                    owner = ("deployment", meta["namespace"], meta["name"])
                    applysets[record["id"]] = (owner, entry.get("name", ""))
                    for kind in record.get("groupKinds") or []:
                        ids, namespaces = kinds.setdefault(kind, (set(), set()))
                        ids.add(record["id"])
                        namespaces.update(record.get("namespaces") or [""])
        self._applysets = applysets
        wanted = {cluster: kinds for cluster, kinds in wanted.items() if kinds}
        assert self.watches is not None  # noqa: S101 (started with the runtime)
        for cluster in set(self._watch_sets) - set(wanted):
            self._watch_sets.pop(cluster, None)
            self.watches.forget(cluster)
        for cluster, kinds in wanted.items():
            kubeconfig: Kubeconfig | None = self._one("kubeconfigs", cluster)
            if kubeconfig is None:
                continue
            watch_set = WatchSet.of(kubeconfig.version, kinds)
            if self._watch_sets.get(cluster) == watch_set:
                continue
            if await self._io(self._start_watches, cluster, kubeconfig, watch_set):
                self._watch_sets[cluster] = watch_set
            else:
                self._watches_stale = True  # tried again on the next sync

    def _start_watches(
        self, cluster: tuple[str, str], kubeconfig: Kubeconfig, watch_set: WatchSet
    ) -> bool:
        """Hand the cluster's watches to the hub; False when its kinds could not be looked
        up (tried again on the next sync). As listing does, a kind whose records name one
        namespace is watched in that namespace only: the API server then looks at that
        namespace's objects, not at every one of the kind."""
        assert self.watches is not None  # noqa: S101 (started with the runtime)
        try:
            client = self.connections.client(*cluster, kubeconfig)
            specs = []
            for kind, ids, namespaces in watch_set.kinds:
                api_version, name = kind.rsplit("/", 1)
                try:
                    resource = client.resource(api_version, name)
                except KindNotServed:
                    continue
                selector = f"{APPLYSET_LABEL} in ({','.join(sorted(ids))})"
                only = (
                    next(iter(namespaces)) if resource.namespaced and len(namespaces) == 1 else ""
                )
                specs.append(WatchSpec(resource, selector, only))
        except FleetError as error:
            log.debug("watches of %s/%s not started: %s", *cluster, error)
            return False
        self.watches.watch(cluster, client, specs)
        return True
