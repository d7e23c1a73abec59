"""GPU pods of interactive namespaces: a priority class and tolerations of their own.

Notebooks and other interactive work share GPUs (time-slicing, MIG) on nodes tainted
for it. A namespace labelled `gpu.fleet.mlops.dev/sharing=interactive` is selected by
the webhook configuration's namespaceSelector; here, each of its pods that asks for a
GPU gets the sharing policy's priority class (unless it names one already) and the
tolerations that let it onto the shared nodes.

The priority class is set by name only. The built-in Priority admission plugin runs
before the webhooks and has already written `priority` and `preemptionPolicy` from
the pod's old class (or none); it runs again after a webhook changes the pod and
refuses one whose values differ from what the new class gives. So both fields go
when the class changes, and the plugin fills them in from our class.

Pure: a pod goes in, a changed deep copy comes out; running it twice changes nothing more.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from fleet.errors import PermanentError
from fleet.webhook.catalogue import is_dns_subdomain

JSON = dict[str, Any]
INTERACTIVE = "interactive"
POLICY_ANNOTATION = "gpu.fleet.mlops.dev/policy"
KEPT_PRIORITY_CLASS = "kept-priority-class"
GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
DEFAULT_TOLERATION: Mapping[str, Any] = {
    "key": "nvidia.com/gpu.shared",
    "operator": "Exists",
    "effect": "NoSchedule",
}
POLICY_FIELDS = ("priorityClassName", "tolerations")
TOLERATION_FIELDS = ("key", "operator", "value", "effect", "tolerationSeconds")
OPERATORS = ("Equal", "Exists")
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class BadPolicy(PermanentError):
    """The GPU sharing policy's configuration cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class SharingPolicy:
    priority_class: str = "fleet-interactive-gpu"
    tolerations: tuple[Mapping[str, Any], ...] = (DEFAULT_TOLERATION,)


def parse_sharing_policy(text: str) -> SharingPolicy:
    """The policy a YAML (or JSON) document declares; fields it leaves out keep their defaults."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BadPolicy(f"GPU sharing policy: not YAML ({error})") from error
    if raw is None:
        return SharingPolicy()
    if not isinstance(raw, dict):
        raise BadPolicy("GPU sharing policy: not a mapping of fields")
    unknown = sorted(str(key) for key in raw if key not in POLICY_FIELDS)
    if unknown:
        raise BadPolicy(
            f"GPU sharing policy: unknown {_fields(unknown)} (it has {', '.join(POLICY_FIELDS)})"
        )
    policy = SharingPolicy()
    if "priorityClassName" in raw:
        name = raw["priorityClassName"]
        if not isinstance(name, str) or not is_dns_subdomain(name):
            raise BadPolicy("GPU sharing policy: priorityClassName is not a PriorityClass name")
        policy = SharingPolicy(name, policy.tolerations)
    if "tolerations" in raw:
        listed = raw["tolerations"]
        if not isinstance(listed, list):
            raise BadPolicy("GPU sharing policy: tolerations is not a list")
        tolerations = tuple(_toleration(index, item) for index, item in enumerate(listed))
        policy = SharingPolicy(policy.priority_class, tolerations)
    return policy


def uses_gpu(pod: JSON) -> bool:
    """Whether a container or init container requests or limits a GPU or a MIG slice of one."""
    spec = pod.get("spec") or {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        resources = container.get("resources") or {}
        for amounts in (resources.get("requests") or {}, resources.get("limits") or {}):
            for resource, quantity in amounts.items():
                gpu = resource == GPU_RESOURCE or resource.startswith(MIG_RESOURCE_PREFIX)
                if gpu and str(quantity) != "0":
                    return True
    return False


def apply_sharing(pod: JSON, policy: SharingPolicy) -> JSON:
    """The GPU pod with the policy's priority class and tolerations; a copy of any other
    pod unchanged."""
    result = copy.deepcopy(pod)
    if not uses_gpu(result):
        return result
    spec = result["spec"]
    current = spec.get("priorityClassName")
    if not current:
        spec["priorityClassName"] = policy.priority_class
        spec.pop("priority", None)
        spec.pop("preemptionPolicy", None)
    outcome = INTERACTIVE if spec["priorityClassName"] == policy.priority_class else None
    if spec.get("tolerations") is None:
        spec["tolerations"] = []
    for toleration in policy.tolerations:
        if dict(toleration) not in spec["tolerations"]:
            spec["tolerations"].append(copy.deepcopy(dict(toleration)))
    meta = result.setdefault("metadata", {})
    if meta.get("annotations") is None:
        meta["annotations"] = {}
    meta["annotations"][POLICY_ANNOTATION] = outcome or KEPT_PRIORITY_CLASS
    return result


def _toleration(index: int, item: object) -> JSON:
    where = f"GPU sharing policy: tolerations[{index}]"
    if not isinstance(item, dict):
        raise BadPolicy(f"{where} is not a mapping")
    unknown = sorted(str(key) for key in item if key not in TOLERATION_FIELDS)
    if unknown:
        raise BadPolicy(f"{where}: unknown {_fields(unknown)}")
    for field in ("key", "operator", "value", "effect"):
        if not isinstance(item.get(field, ""), str):
            raise BadPolicy(f"{where}.{field} is not a string")
    operator = item.get("operator", "Equal")
    if operator not in OPERATORS:
        raise BadPolicy(f"{where}.operator must be one of {', '.join(OPERATORS)}")
    if operator == "Exists" and item.get("value"):
        raise BadPolicy(f"{where}.value must be empty when operator is Exists")
    if not item.get("key") and operator != "Exists":
        raise BadPolicy(f"{where}.key may be empty only when operator is Exists")
    if item.get("effect", "") not in ("", *EFFECTS):
        raise BadPolicy(f"{where}.effect must be one of {', '.join(EFFECTS)} (or empty)")
    if "tolerationSeconds" in item:
        seconds = item["tolerationSeconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise BadPolicy(f"{where}.tolerationSeconds is not a whole number")
        if item.get("effect") != "NoExecute":
            raise BadPolicy(f"{where}.tolerationSeconds needs effect NoExecute")
    return dict(item)


def _fields(names: list[str]) -> str:
    return f"field{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)}"
