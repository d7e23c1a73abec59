"""Keep one AddonDeployment per (profile, selected cluster), and the profile's summary.

The desired set is computed from the profile, its Addons, the Clusters of its
namespace and their Datacenters; AddonDeployments are created, updated (their
`revision` changes whenever any input changes) or deleted to match.
"""

from __future__ import annotations

import logging
from typing import Any

from fleet.api import (
    API_VERSION,
    CLEANUP_FINALIZER,
    CLUSTER_FINALIZER,
    LABEL_CLUSTER,
    LABEL_PROFILE,
)
from fleet.api.models import Cluster, InvalidSpec, parse_cluster, parse_profile
from fleet.controller.management import Management
from fleet.hashing import digest
from fleet.select import InvalidSelector, select
from fleet.status import FAILED, PENDING, READY, UNREACHABLE, now, stamp

JSON = dict[str, Any]
log = logging.getLogger("fleet.controller")
CONFLICT_RETRIES = 5


def deployment_name(profile: str, cluster: str) -> str:
    return f"{profile}.{cluster}"


def revision(
    profile_spec: JSON,
    addon_specs: dict[str, JSON | None],
    cluster: Cluster,
    datacenter_spec: JSON | None,
) -> str:
    """Hash of every input that decides what a cluster gets (pure)."""
    return digest(
        {
            "profile": profile_spec,
            "addons": addon_specs,
            "cluster": {
                "labels": cluster.labels,
                "annotations": cluster.annotations,
                "topology": cluster.topology,
            },
            "datacenter": datacenter_spec,
        }
    )


def desired_deployment(profile_body: JSON, cluster: Cluster, rev: str) -> JSON:
    meta, spec = profile_body["metadata"], profile_body["spec"]
    return {
        "apiVersion": API_VERSION,
        "kind": "AddonDeployment",
        "metadata": {
            "name": deployment_name(meta["name"], cluster.name),
            "namespace": meta["namespace"],
            "labels": {LABEL_PROFILE: meta["name"], LABEL_CLUSTER: cluster.name},
            # Present from creation, so that a deletion can never skip the cleanup.
            "finalizers": [CLEANUP_FINALIZER],
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "AddonProfile",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "cluster": cluster.name,
            "profile": meta["name"],
            "revision": rev,
            "syncMode": spec.get("syncMode", "Continuous"),
            "cleanupPolicy": spec.get("cleanupPolicy", "Delete"),
            "driftIntervalSeconds": int((spec.get("drift") or {}).get("intervalSeconds", 180)),
        },
    }


def _summary(deployments: list[JSON]) -> JSON:
    phases = [(d.get("status") or {}).get("phase", PENDING) for d in deployments]
    return {
        "matched": len(deployments),
        "ready": phases.count(READY),
        "failed": phases.count(FAILED),
        "unreachable": phases.count(UNREACHABLE),
        "progressing": len(phases)
        - phases.count(READY)
        - phases.count(FAILED)
        - phases.count(UNREACHABLE),
    }


def _condition(ok: bool, reason: str, message: str) -> JSON:
    return {
        "type": "Ready",
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": stamp(now()),
    }


def sync_profile(management: Management, namespace: str, name: str) -> None:
    body = management.get("addonprofiles", namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    try:
        profile = parse_profile(body)
        clusters = [parse_cluster(c) for c in management.clusters(namespace)]
        selected = select(profile.selector, clusters)
    except (InvalidSpec, InvalidSelector) as error:
        _write_status(
            management,
            body,
            {
                "observedGeneration": body["metadata"].get("generation"),
                "conditions": [_condition(False, "InvalidSpec", str(error))],
            },
        )
        return
    addon_specs = {}
    for entry in profile.addons:
        addon = management.get("addons", namespace, entry.name)
        addon_specs[entry.name] = addon["spec"] if addon else None
    datacenters: dict[str, JSON | None] = {}
    existing = {
        d["metadata"]["name"]: d
        for d in management.list("addondeployments", namespace, f"{LABEL_PROFILE}={name}")
    }
    desired = {}
    if not profile.paused:
        for cluster in selected:
            if cluster.datacenter and cluster.datacenter not in datacenters:
                found = management.datacenter(cluster.datacenter)
                datacenters[cluster.datacenter] = found.get("spec") if found else None
            rev = revision(body["spec"], addon_specs, cluster, datacenters.get(cluster.datacenter))
            wanted = desired_deployment(body, cluster, rev)
            desired[wanted["metadata"]["name"]] = wanted
    else:
        desired = dict(existing)
    for deployment_name_, wanted in desired.items():
        current = existing.get(deployment_name_)
        if current is None:
            management.create("addondeployments", namespace, wanted)
            log.info("created AddonDeployment %s/%s", namespace, deployment_name_)
        elif current.get("spec") != wanted["spec"]:
            management.patch(
                "addondeployments", namespace, deployment_name_, {"spec": wanted["spec"]}
            )
    for stale in set(existing) - set(desired):
        management.delete("addondeployments", namespace, stale)
        log.info("deleting AddonDeployment %s/%s: cluster no longer selected", namespace, stale)
    for cluster in selected:
        ensure_cluster_finalizer(management, namespace, cluster.name)
    kept = [d for n, d in existing.items() if n in desired]
    summary = _summary(kept) | {"matched": len(desired)}
    missing = [n for n, spec in addon_specs.items() if spec is None]
    message = (
        f"Addons not found: {', '.join(missing)}"
        if missing
        else (f"{summary['ready']}/{summary['matched']} clusters ready")
    )
    _write_status(
        management,
        body,
        {
            "observedGeneration": body["metadata"].get("generation"),
            "revision": digest({"profile": body["spec"], "addons": addon_specs}),
            "matchedClusters": sorted(c.name for c in selected),
            "summary": summary,
            "conditions": [
                _condition(
                    not missing and summary["ready"] == summary["matched"],
                    "AddonsMissing" if missing else "Summary",
                    message,
                )
            ],
        },
    )


def _write_status(management: Management, body: JSON, status: JSON) -> None:
    """Patch the profile's status only when it changed (its own write would re-trigger a sync).

    A condition keeps its lastTransitionTime while its status stays the same.
    """
    current = body.get("status") or {}
    previous = {c["type"]: c for c in current.get("conditions") or []}
    for condition in status.get("conditions", []):
        before = previous.get(condition["type"])
        if before and before.get("status") == condition["status"]:
            condition["lastTransitionTime"] = before.get("lastTransitionTime")
    if any(current.get(key) != value for key, value in status.items()):
        meta = body["metadata"]
        management.patch_status("addonprofiles", meta["namespace"], meta["name"], status)


def _update_cluster_finalizers(
    management: Management, namespace: str, cluster: str, add: bool
) -> None:
    """Add or remove our finalizer on a Cluster, re-reading it when a write races ours."""
    for _ in range(CONFLICT_RETRIES):
        body = management.cluster(namespace, cluster)
        if body is None or (add and body["metadata"].get("deletionTimestamp")):
            return
        finalizers = body["metadata"].get("finalizers") or []
        if (CLUSTER_FINALIZER in finalizers) == add:
            return
        wanted = (
            [*finalizers, CLUSTER_FINALIZER]
            if add
            else [f for f in finalizers if f != CLUSTER_FINALIZER]
        )
        if management.set_cluster_finalizers(body, wanted):
            return


def ensure_cluster_finalizer(management: Management, namespace: str, cluster: str) -> None:
    """Hold a Cluster's deletion until its add-ons are cleaned up (our one write to CAPI)."""
    _update_cluster_finalizers(management, namespace, cluster, add=True)


def release_cluster(
    management: Management, namespace: str, cluster: str, finished: str = ""
) -> bool:
    """For a Cluster being deleted: delete its deployments; drop our finalizer once none remain.

    `finished` names a deployment whose cleanup just completed (it still exists
    until its own finalizer goes). Returns True once the finalizer is gone.
    """
    body = management.cluster(namespace, cluster)
    if body is None:
        return True
    remaining = [
        d
        for d in management.list("addondeployments", namespace, f"{LABEL_CLUSTER}={cluster}")
        if d["metadata"]["name"] != finished
    ]
    for deployment in remaining:
        if not deployment["metadata"].get("deletionTimestamp"):
            management.delete("addondeployments", namespace, deployment["metadata"]["name"])
    if remaining:
        return False
    _update_cluster_finalizers(management, namespace, cluster, add=False)
    return True
