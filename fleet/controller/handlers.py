"""kopf wiring: watches fill caches (kopf indexes) and queue keys; workers reconcile.

No handler here writes anything or calls the API: an event only decides
which keys it concerns (a Cluster's label change → the profiles whose
selection it changes; an AddonDeployment's new generation → that
deployment), and the work queue runs the reconcile of each key in a worker
thread, reading its inputs from the indexes. Idle, nothing is queued except
each deployment's next drift check, at the time it is due.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import Any

import kopf

from fleet.api import CAPI_GROUP, GROUP, LABEL_PROFILE, LABEL_REVISION, VERSION
from fleet.api.models import Cluster, parse_cluster
from fleet.connections.cache import Kubeconfig
from fleet.controller.runtime import Runtime
from fleet.revisions import Snapshot, parse_snapshot
from fleet.select import InvalidSelector, matches
from fleet.status import FAILED, READY

log = logging.getLogger("fleet.controller")
KUBECONFIG_TYPE = "cluster.x-k8s.io/secret"
SUMMARY_DELAY = 2.0


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    # fleet manages its finalizers itself; kopf's must never be one of them.
    settings.persistence.finalizer = f"{GROUP}/kopf"
    settings.posting.enabled = False
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    _runtime(memo).start(asyncio.get_running_loop(), kwargs)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    _runtime(memo).stop()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the service account; elsewhere: $KUBECONFIG, read now (set by --kubeconfig)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


# Indexes: the caches every reconcile reads instead of the API.


@kopf.index(CAPI_GROUP, "clusters")
def clusters(namespace: Any, name: str, body: kopf.Body, **_: Any) -> dict[Hashable, Cluster]:
    return {(namespace, name): parse_cluster(dict(body))}


@kopf.index(CAPI_GROUP, "clusters")
def clusters_by_namespace(namespace: Any, body: kopf.Body, **_: Any) -> dict[Hashable, Cluster]:
    return {namespace: parse_cluster(dict(body))}


@kopf.index("", "v1", "secrets", labels={"cluster.x-k8s.io/cluster-name": kopf.PRESENT})
def kubeconfigs(namespace: Any, body: kopf.Body, **_: Any) -> dict[Hashable, Kubeconfig]:
    if body.get("type") != KUBECONFIG_TYPE or not body["metadata"]["name"].endswith("-kubeconfig"):
        return {}
    value = (body.get("data") or {}).get("value", "")
    cluster = body["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"]
    version = f"{body['metadata']['uid']}/{body['metadata']['resourceVersion']}"
    return {(namespace, cluster): Kubeconfig(version, value)}


@kopf.index(GROUP, VERSION, "addons")
def addons(namespace: Any, name: str, body: kopf.Body, **_: Any) -> dict[Hashable, Any]:
    return {
        (namespace, name): {
            "metadata": dict(body["metadata"]),
            "spec": dict(body.get("spec") or {}),
        }
    }


@kopf.index(GROUP, VERSION, "datacenters")
def datacenters(name: str, body: kopf.Body, **_: Any) -> dict[Hashable, Any]:
    return {name: {"metadata": dict(body["metadata"]), "spec": dict(body.get("spec") or {})}}


@kopf.index(GROUP, VERSION, "addonprofiles")
def profiles(namespace: Any, name: str, body: kopf.Body, **_: Any) -> dict[Hashable, Any]:
    return {(namespace, name): _copy(body)}


@kopf.index(
    "apps",
    "v1",
    "controllerrevisions",
    labels={LABEL_PROFILE: kopf.PRESENT, LABEL_REVISION: kopf.PRESENT},
)
def revisions(namespace: Any, body: kopf.Body, **_: Any) -> dict[Hashable, Snapshot]:
    """A profile's kept revisions, by (namespace, profile)."""
    return {(namespace, body["metadata"]["labels"][LABEL_PROFILE]): parse_snapshot(body)}


@kopf.index(GROUP, VERSION, "modelartifacts")
def models(namespace: Any, name: str, body: kopf.Body, **_: Any) -> dict[Hashable, Any]:
    return {(namespace, name): _copy(body)}


@kopf.index(GROUP, VERSION, "addondeployments")
def deployments(namespace: Any, name: str, body: kopf.Body, **_: Any) -> dict[Hashable, Any]:
    return {(namespace, name): _copy(body)}


@kopf.index(GROUP, VERSION, "addondeployments")
def deployments_by_owner(namespace: Any, body: kopf.Body, **_: Any) -> dict[Hashable, Any]:
    """Deployments a profile made (its controller reference), by profile and by cluster.

    Only these are ever updated or deleted by a profile or a Cluster's deletion: an
    AddonDeployment written by hand is left to whoever wrote it.
    """
    meta = body["metadata"]
    profile = next(
        (
            ref["name"]
            for ref in meta.get("ownerReferences") or []
            if ref.get("controller") and ref.get("kind") == "AddonProfile"
        ),
        None,
    )
    if profile is None:
        return {}
    cluster = (body.get("spec") or {}).get("cluster", "")
    name = meta["name"]
    return {("profile", namespace, profile): name, ("cluster", namespace, cluster): name}


def _copy(body: kopf.Body) -> dict[str, Any]:
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": dict(body["metadata"]),
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


# Events: decide which keys an event concerns, queue them, nothing else.


def _changed(memo: Any, seen: object) -> bool:
    """Whether what matters of an object differs from the last event (kept in its kopf memo)."""
    before = getattr(memo, "seen", None)
    memo.seen = seen
    return bool(before != seen)


@kopf.on.event(CAPI_GROUP, "clusters")
async def cluster_event(
    body: kopf.Body, type: str, memo: kopf.Memo, namespace: Any, name: str, **_: Any
) -> None:
    runtime = _runtime(memo)
    cluster = parse_cluster(dict(body))
    before: tuple[Any, ...] | None = getattr(memo, "seen", None)
    seen = (
        None
        if type == "DELETED"
        else (
            cluster.labels,
            cluster.annotations,
            cluster.topology,
            cluster.paused,
            cluster.control_plane_ready,
            cluster.deleting,
        )
    )
    if not _changed(memo, seen):
        return
    runtime.rewatch()
    old_labels = before[0] if before else None
    for profile in runtime.profiles_of(namespace):
        selector = profile.get("spec", {}).get("clusterSelector") or {}
        try:
            concerned = matches(selector, cluster.labels) or (
                old_labels is not None and matches(selector, old_labels)
            )
        except InvalidSelector:
            concerned = True
        if concerned:
            runtime.queue.add(("profile", namespace, profile["metadata"]["name"]))
    if before is not None and seen is not None and before[3:] != seen[3:]:
        runtime.wake_deployments_of(namespace, name)
    for model in runtime.models_of(namespace):  # which datacenters need a model may change
        runtime.queue.add(("model", *model))
    if cluster.deleting or type == "DELETED":
        runtime.queue.add(("cluster", namespace, name))
    if type == "DELETED":
        runtime.connections.forget(namespace, name)


@kopf.on.event("", "v1", "secrets", labels={"cluster.x-k8s.io/cluster-name": kopf.PRESENT})
async def kubeconfig_event(body: kopf.Body, type: str, memo: kopf.Memo, **_: Any) -> None:
    if body.get("type") != KUBECONFIG_TYPE:
        return
    before = getattr(memo, "seen", None)
    if not _changed(memo, None if type == "DELETED" else body["metadata"].get("resourceVersion")):
        return
    if before is not None:
        namespace = body["metadata"]["namespace"]
        cluster = body["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"]
        runtime = _runtime(memo)
        runtime.connections.forget(namespace, cluster)
        runtime.wake_deployments_of(namespace, cluster)
        runtime.rewatch()


@kopf.on.event(GROUP, VERSION, "addons")
async def addon_event(
    body: kopf.Body, type: str, memo: kopf.Memo, namespace: Any, name: str, **_: Any
) -> None:
    if not _changed(memo, None if type == "DELETED" else body.get("spec")):
        return
    runtime = _runtime(memo)
    for profile in runtime.profiles_of(namespace):
        if any(e.get("name") == name for e in profile.get("spec", {}).get("addons") or []):
            runtime.queue.add(("profile", namespace, profile["metadata"]["name"]))


@kopf.on.event(GROUP, VERSION, "datacenters")
async def datacenter_event(body: kopf.Body, type: str, memo: kopf.Memo, **_: Any) -> None:
    if not _changed(memo, None if type == "DELETED" else body.get("spec")):
        return
    runtime = _runtime(memo)
    for profile in runtime.all_profiles():
        meta = profile["metadata"]
        runtime.queue.add(("profile", meta["namespace"], meta["name"]))
    for model in runtime.models_of(None):
        runtime.queue.add(("model", *model))


@kopf.on.event(GROUP, VERSION, "addonprofiles")
async def profile_event(
    body: kopf.Body, type: str, memo: kopf.Memo, namespace: Any, name: str, **_: Any
) -> None:
    meta = body["metadata"]
    seen = (meta.get("generation"), meta.get("annotations"), meta.get("deletionTimestamp"))
    if type != "DELETED" and _changed(memo, seen):
        _runtime(memo).queue.add(("profile", namespace, name))


@kopf.on.event(GROUP, VERSION, "modelartifacts")
async def model_event(
    body: kopf.Body, type: str, memo: kopf.Memo, namespace: Any, name: str, **_: Any
) -> None:
    meta = body["metadata"]
    if _changed(memo, (type == "DELETED", meta.get("generation"), meta.get("deletionTimestamp"))):
        _runtime(memo).queue.add(("model", namespace, name))


@kopf.on.event(GROUP, VERSION, "addondeployments")
async def deployment_event(
    body: kopf.Body, type: str, memo: kopf.Memo, namespace: Any, name: str, **_: Any
) -> None:
    runtime = _runtime(memo)
    runtime.rewatch()
    key = ("deployment", namespace, name)
    spec = body.get("spec") or {}
    if type == "DELETED":
        runtime.forget_deployment(key)
        if runtime.cluster_deleting(namespace, spec.get("cluster", "")):
            runtime.queue.add(("cluster", namespace, spec.get("cluster", "")))
    else:
        runtime.remember_deployment(key, memo)
        meta = body["metadata"]
        if _changed(memo, (meta.get("generation"), meta.get("deletionTimestamp"))):
            runtime.queue.add(key)
    profile = ("profile", namespace, spec.get("profile", ""))
    if type != "DELETED" and _settled_anew(body, memo) and runtime.rolls_out(*profile[1:]):
        # The next wave of a rollout waits for this cluster: look at once.
        runtime.queue.add(profile)
    else:
        runtime.queue.add_after(profile, SUMMARY_DELAY)


def _settled_anew(body: kopf.Body, memo: Any) -> bool:
    """Whether the deployment now reports Ready or Failed on its current spec, and did not
    on the last event (kept in its kopf memo)."""
    status = body.get("status") or {}
    generation = body["metadata"].get("generation")
    settled = status.get("observedGeneration") == generation and status.get("phase") in (
        READY,
        FAILED,
    )
    seen = (generation, status.get("phase")) if settled else None
    before = getattr(memo, "settled", None)
    memo.settled = seen
    return seen is not None and seen != before
