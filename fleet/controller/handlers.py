"""kopf handlers: which event calls which piece of the controller. No logic of their own.

CAPI Clusters, Addons, Datacenters and kubeconfig Secrets are only watched
(`on.event` writes nothing to them); AddonProfiles and AddonDeployments are
ours, with timers for summaries, retries and drift checks. One lock per
AddonDeployment keeps its event handler and timer from overlapping.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from typing import Any

import kopf

from fleet.api import CAPI_GROUP, CLEANUP_FINALIZER, GROUP, VERSION
from fleet.controller import deployments, profiles
from fleet.controller.deployments import Controller
from fleet.errors import FleetError, TemporaryError
from fleet.status import DELETING, PROBE, due, now

log = logging.getLogger("fleet.controller")

TICK_SECONDS = 2.0
PROFILE_RESYNC_SECONDS = 10.0
CLEANUP_GRACE_SECONDS = 60.0
WORKERS = 32
GAUGE_SECONDS = 10.0

_locks: dict[str, threading.Lock] = {}
# When this process last reconciled each deployment (by uid): kept in memory so
# that a drift pass that finds nothing writes nothing.
_last_attempt: dict[str, datetime.datetime] = {}
_locks_guard = threading.Lock()


def _lock(uid: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(uid, threading.Lock())


def _controller(memo: Any) -> Controller:
    controller: Controller = memo.controller
    return controller


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = CLEANUP_FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.execution.max_workers = WORKERS
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300


@kopf.on.startup()
async def start_phase_gauge(memo: kopf.Memo, **_: Any) -> None:
    """Refresh the deployments-by-phase gauge in the background (kopf has no global timers)."""
    controller = _controller(memo)

    def count() -> None:
        items = controller.management.list("addondeployments")
        controller.metrics.count_phases(
            [(d.get("status") or {}).get("phase", "Pending") for d in items]
        )

    async def refresh() -> None:
        while True:
            try:
                await asyncio.to_thread(count)
            except Exception:
                log.warning("could not refresh the phase gauge", exc_info=True)
            await asyncio.sleep(GAUGE_SECONDS)

    memo.gauge_task = asyncio.create_task(refresh())


@kopf.on.cleanup()
async def stop_phase_gauge(memo: kopf.Memo, **_: Any) -> None:
    task = getattr(memo, "gauge_task", None)
    if task is not None:
        task.cancel()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the service account; elsewhere: $KUBECONFIG, read now (set by --kubeconfig)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def _sync_namespace(controller: Controller, namespace: str) -> None:
    for profile in controller.management.list("addonprofiles", namespace):
        profiles.sync_profile(controller.management, namespace, profile["metadata"]["name"])


@kopf.on.event(CAPI_GROUP, "clusters")
def cluster_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller = _controller(memo)
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if body["metadata"].get("deletionTimestamp"):
        profiles.release_cluster(controller.management, namespace, name)
    _sync_namespace(controller, namespace)


@kopf.on.event("", "v1", "secrets", labels={"cluster.x-k8s.io/cluster-name": kopf.PRESENT})
def kubeconfig_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if body.get("type") == "cluster.x-k8s.io/secret":
        cluster = body["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"]
        _controller(memo).remotes.forget(body["metadata"]["namespace"], cluster)


@kopf.on.event(GROUP, VERSION, "addons")
def addon_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _sync_namespace(_controller(memo), body["metadata"]["namespace"])


@kopf.on.event(GROUP, VERSION, "datacenters")
def datacenter_changed(memo: kopf.Memo, **_: Any) -> None:
    controller = _controller(memo)
    namespaces = {p["metadata"]["namespace"] for p in controller.management.list("addonprofiles")}
    for namespace in sorted(namespaces):
        _sync_namespace(controller, namespace)


@kopf.on.event(GROUP, VERSION, "addonprofiles")
def profile_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    profiles.sync_profile(
        _controller(memo).management, body["metadata"]["namespace"], body["metadata"]["name"]
    )


@kopf.timer(GROUP, VERSION, "addonprofiles", interval=PROFILE_RESYNC_SECONDS)
def profile_resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    profiles.sync_profile(
        _controller(memo).management, body["metadata"]["namespace"], body["metadata"]["name"]
    )


def _reconcile_if_due(body: kopf.Body, memo: kopf.Memo) -> None:
    if body["metadata"].get("deletionTimestamp"):
        return
    reason = deployments_due(body)
    if reason is None:
        return
    lock = _lock(body["metadata"]["uid"])
    if not lock.acquire(blocking=False):
        return
    controller = _controller(memo)
    started = time.monotonic()
    result = "error"
    try:
        fresh = controller.management.get(
            "addondeployments", body["metadata"]["namespace"], body["metadata"]["name"]
        )
        if fresh is None or deployments_due(fresh) is None:
            result = "skipped"
            return
        log.debug(
            "reconciling %s/%s: %s", body["metadata"]["namespace"], body["metadata"]["name"], reason
        )
        outcome = deployments.reconcile(controller, fresh, drift=deployments_due(fresh) != PROBE)
        _last_attempt[fresh["metadata"]["uid"]] = now()
        for kind, event_reason, message in outcome.events:
            kopf.event(body, type=kind, reason=event_reason, message=message)
        result = outcome.status.get("phase", "unknown")
    except FleetError as error:
        controller.metrics.errors.labels(type(error).__name__).inc()
        raise
    finally:
        lock.release()
        if result != "skipped":
            controller.metrics.reconcile_seconds.labels(result).observe(time.monotonic() - started)


def deployments_due(body: kopf.Body | dict[str, Any]) -> str | None:
    return due(dict(body), now(), _last_attempt.get(body["metadata"]["uid"]))


@kopf.on.event(GROUP, VERSION, "addondeployments")
def deployment_changed(body: kopf.Body, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    if type != "DELETED":
        _reconcile_if_due(body, memo)


@kopf.timer(GROUP, VERSION, "addondeployments", interval=TICK_SECONDS)
def deployment_tick(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _reconcile_if_due(body, memo)


@kopf.on.delete(GROUP, VERSION, "addondeployments")
def deployment_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    controller = _controller(memo)
    meta = body["metadata"]
    controller.management.patch_status(
        "addondeployments",
        meta["namespace"],
        meta["name"],
        {"phase": DELETING, "message": "removing the add-ons' objects from the cluster"},
    )
    with _lock(body["metadata"]["uid"]):
        try:
            done = deployments.cleanup(controller, dict(body), CLEANUP_GRACE_SECONDS)
        except TemporaryError as error:
            raise kopf.TemporaryError(str(error), delay=error.delay) from error
    kopf.event(body, type="Normal", reason="CleanedUp", message=done)
    namespace, cluster = body["metadata"]["namespace"], body["spec"]["cluster"]
    cluster_body = controller.management.cluster(namespace, cluster)
    if cluster_body and cluster_body["metadata"].get("deletionTimestamp"):
        profiles.release_cluster(
            controller.management, namespace, cluster, finished=body["metadata"]["name"]
        )
