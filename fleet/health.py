"""Is an applied object healthy? kstatus-like rules over the live body.

Pure: takes the object as the workload cluster returns it. Kinds without a
rule are Ready once applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

READY, PROGRESSING, FAILED = "Ready", "Progressing", "Failed"


@dataclass(frozen=True, slots=True)
class Health:
    state: str
    message: str = ""

    @property
    def ready(self) -> bool:
        return self.state == READY


def _conditions(body: JSON) -> dict[str, JSON]:
    return {c.get("type", ""): c for c in (body.get("status") or {}).get("conditions") or []}


def _stale(body: JSON) -> bool:
    generation = body.get("metadata", {}).get("generation")
    observed = (body.get("status") or {}).get("observedGeneration")
    return generation is not None and (observed is None or observed < generation)


def _deployment(body: JSON) -> Health:
    status = body.get("status") or {}
    wanted = (body.get("spec") or {}).get("replicas", 1)
    if _stale(body):
        return Health(PROGRESSING, "waiting for the controller to observe the new generation")
    if _conditions(body).get("Progressing", {}).get("reason") == "ProgressDeadlineExceeded":
        return Health(FAILED, "progress deadline exceeded")
    updated, available = status.get("updatedReplicas", 0), status.get("availableReplicas", 0)
    if updated < wanted or available < wanted:
        return Health(PROGRESSING, f"{available}/{wanted} replicas available, {updated} updated")
    return Health(READY)


def _daemonset(body: JSON) -> Health:
    status = body.get("status") or {}
    if _stale(body):
        return Health(PROGRESSING, "waiting for the controller to observe the new generation")
    desired = status.get("desiredNumberScheduled", 0)
    updated = status.get("updatedNumberScheduled", 0)
    available = status.get("numberAvailable", 0)
    if updated < desired or available < desired:
        return Health(PROGRESSING, f"{available}/{desired} pods available, {updated} updated")
    return Health(READY)


def _statefulset(body: JSON) -> Health:
    status = body.get("status") or {}
    wanted = (body.get("spec") or {}).get("replicas", 1)
    if _stale(body):
        return Health(PROGRESSING, "waiting for the controller to observe the new generation")
    ready = status.get("readyReplicas", 0)
    if ready < wanted or status.get("updatedReplicas", 0) < wanted:
        return Health(PROGRESSING, f"{ready}/{wanted} replicas ready")
    if status.get("currentRevision") != status.get("updateRevision"):
        return Health(PROGRESSING, "rolling out a new revision")
    return Health(READY)


def _job(body: JSON) -> Health:
    conditions = _conditions(body)
    if conditions.get("Failed", {}).get("status") == "True":
        return Health(FAILED, conditions["Failed"].get("message") or "job failed")
    if conditions.get("Complete", {}).get("status") == "True":
        return Health(READY)
    return Health(PROGRESSING, "job has not completed")


def _crd(body: JSON) -> Health:
    if _conditions(body).get("Established", {}).get("status") == "True":
        return Health(READY)
    return Health(PROGRESSING, "CRD not established yet")


def _service(body: JSON) -> Health:
    if (body.get("spec") or {}).get("type") != "LoadBalancer":
        return Health(READY)
    if ((body.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
        return Health(READY)
    return Health(PROGRESSING, "waiting for a load balancer address")


def _pvc(body: JSON) -> Health:
    phase = (body.get("status") or {}).get("phase")
    return (
        Health(READY) if phase == "Bound" else Health(PROGRESSING, f"claim is {phase or 'Pending'}")
    )


def _cluster_policy(body: JSON) -> Health:
    """The NVIDIA GPU Operator's ClusterPolicy: the operator sets `status.state` to `ready`
    once every operand DaemonSet (driver, toolkit, device plugin, dcgm-exporter, GFD,
    MIG manager) is ready on the GPU nodes."""
    state = (body.get("status") or {}).get("state")
    if state == "ready":
        return Health(READY)
    if not state:
        return Health(PROGRESSING, "the GPU operator has not reported on its operands yet")
    return Health(PROGRESSING, f"GPU operator operands are {state}")


RULES: dict[str, Callable[[JSON], Health]] = {
    "Deployment": _deployment,
    "DaemonSet": _daemonset,
    "StatefulSet": _statefulset,
    "Job": _job,
    "CustomResourceDefinition": _crd,
    "Service": _service,
    "PersistentVolumeClaim": _pvc,
    "ClusterPolicy": _cluster_policy,
}


def health(body: JSON) -> Health:
    rule = RULES.get(body.get("kind", ""))
    return rule(body) if rule else Health(READY)


def summarize(states: list[tuple[str, Health]]) -> Health:
    """An add-on's health: its first failed object, else its first still progressing."""
    for name, state in states:
        if state.state == FAILED:
            return Health(FAILED, f"{name}: {state.message}")
    for name, state in states:
        if state.state == PROGRESSING:
            return Health(PROGRESSING, f"{name}: {state.message}")
    return Health(READY)
