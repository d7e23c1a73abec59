"""Give a pod the models it names: read-only mounts, their paths in its environment,
and a node affinity that puts it where the models already are.

A pod asks with `models.fleet.mlops.dev/use: "llama-3-8b,bge-small"`. By default
(`source: cache`) each model is a hostPath volume of the node cache that fleet's
agents fill, and the pod prefers (or, with `affinity: required`, needs) nodes
labelled ready for every model. With `source: image` the kubelet pulls the model
itself as an OCI image volume (KEP-4639) and no affinity is added.

Pure: a pod goes in, a changed deep copy comes out (the server turns the
difference into a JSON patch). Running it on its own output changes nothing, so a
reinvoked webhook or a re-admitted pod is safe. What the pod's author wrote wins
where that can be honoured (an environment variable already set is kept) and is
refused where it cannot (another volume or mount in the place fleet needs).

The helpers that add volumes, mounts and environment variables are shared with
`fleet.webhook.credentials`.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.hashing import sha256_hex
from fleet.webhook.catalogue import READY, Model, Rejected, env_name, ready_label

JSON = dict[str, Any]
USE = "models.fleet.mlops.dev/use"
AFFINITY = "models.fleet.mlops.dev/affinity"
SOURCE = "models.fleet.mlops.dev/source"
CONTAINERS = "models.fleet.mlops.dev/containers"
MOUNTED = "models.fleet.mlops.dev/mounted"
AFFINITIES = ("preferred", "required")
SOURCES = ("cache", "image")
MODEL_PATH = "MODEL_PATH"
# KEP-4639's ImageVolume is on by default from this release (beta but off in 1.33, 1.34).
IMAGE_VOLUMES_FROM = "1.35"
NAME_LIMIT = 63
VOLUME_PREFIX = "model-"
CLAIM_VOLUME = "fleet-models"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    cache_root: str = "/var/lib/fleet/model-cache"
    mount_root: str = "/models"
    image_volumes: bool = False  # the cluster serves KEP-4639 image volumes
    kubernetes_version: str = ""  # for the message that refuses `source: image`
    preferred_weight: int = 100
    # Shared-volume mode: every model is a subPath of this ReadWriteMany claim of the
    # pod's namespace (filled by `fleet agent fill`), and no node is preferred.
    claim: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.preferred_weight <= 100:
            # The API server would refuse every pod we send back.
            raise ValueError(f"preferred_weight {self.preferred_weight} is not within 1..100")


def names(text: str) -> list[str]:
    """A comma-separated annotation's entries: trimmed, empty ones dropped, first of each kept."""
    return list(dict.fromkeys(entry.strip() for entry in text.split(",") if entry.strip()))


def volume_name(model: str) -> str:
    """`model-<name>`, cut and given a hash of the whole name when longer than a DNS label."""
    whole = f"{VOLUME_PREFIX}{model}"
    if len(whole) <= NAME_LIMIT:
        return whole
    tag = sha256_hex(model.encode())[:8]
    return f"{whole[: NAME_LIMIT - len(tag) - 1].rstrip('-')}-{tag}"


def mount_models(pod: JSON, catalogue: Mapping[str, Model], policy: ModelPolicy) -> JSON:
    """The pod with the models of its `use` annotation mounted; a copy of it unchanged
    when it names none. Raises `Rejected` with what the pod's author must change."""
    result = copy.deepcopy(pod)
    annotations = (result.get("metadata") or {}).get("annotations") or {}
    wanted = names(annotations.get(USE) or "")
    if not wanted:
        return result
    affinity = _choice(annotations, AFFINITY, AFFINITIES)
    source = _choice(annotations, SOURCE, SOURCES)
    if source == "image" and not policy.image_volumes:
        version = policy.kubernetes_version or "an unknown version"
        raise Rejected(
            f"{SOURCE}: image needs image volumes (Kubernetes {IMAGE_VOLUMES_FROM} or later); "
            f"this cluster runs {version} and does not offer them. Use {SOURCE}: cache"
        )
    unknown = [name for name in wanted if name not in catalogue]
    if unknown:
        known = ", ".join(sorted(catalogue)) or "none"
        raise Rejected(f"unknown {_plural('model', unknown)}; this cluster knows: {known}")
    models = [catalogue[name] for name in wanted]
    spec = _dict(result, "spec")
    containers = _targets(spec, annotations.get(CONTAINERS) or "")
    for model in models:
        purpose = f"model {model.name!r}"
        volume = _volume(model, source, policy)
        add_volume(spec, volume, purpose)
        path = f"{policy.mount_root}/{model.name}"
        mount = {"name": volume["name"], "mountPath": path, "readOnly": True}
        if "persistentVolumeClaim" in volume:
            mount["subPath"] = f"models/{model.name}"
        for container in containers:
            add_mount(container, mount, purpose)
            add_env(container, {"name": env_name(model.name), "value": path})
            if len(models) == 1:
                add_env(container, {"name": MODEL_PATH, "value": path})
    if source == "cache" and not policy.claim:
        _near_models(spec, [model.name for model in models], affinity, policy.preferred_weight)
    _dict(_dict(result, "metadata"), "annotations")[MOUNTED] = ",".join(
        f"{model.name}@{model.digest}" for model in models
    )
    return result


def add_volume(spec: JSON, volume: JSON, purpose: str) -> None:
    """Add `volume` to the pod spec unless exactly it is there; another volume of its
    name is refused."""
    volumes = _list(spec, "volumes")
    for present in volumes:
        if present.get("name") == volume["name"]:
            if present == volume:
                return
            raise Rejected(
                f"the pod already has a volume named {volume['name']!r}, "
                f"and it is not the one fleet adds for {purpose}"
            )
    volumes.append(copy.deepcopy(volume))


def add_mount(container: JSON, mount: JSON, purpose: str) -> None:
    """Add `mount` to the container unless exactly it is there; anything else mounted
    at its path is refused."""
    mounts = _list(container, "volumeMounts")
    path = posixpath.normpath(mount["mountPath"])
    for present in mounts:
        if posixpath.normpath(str(present.get("mountPath", ""))) == path:
            if present == mount:
                return
            raise Rejected(
                f"container {container.get('name')!r} already mounts volume "
                f"{present.get('name')!r} at {mount['mountPath']!r}, "
                f"where fleet mounts {purpose}"
            )
    mounts.append(copy.deepcopy(mount))


def add_env(container: JSON, variable: JSON) -> None:
    """Add `variable` unless the container defines one of its name (its author's wins)."""
    env = _list(container, "env")
    if all(present.get("name") != variable["name"] for present in env):
        env.append(copy.deepcopy(variable))


def _volume(model: Model, source: str, policy: ModelPolicy) -> JSON:
    if source == "image":
        return {
            "name": volume_name(model.name),
            "image": {"reference": model.reference, "pullPolicy": "IfNotPresent"},
        }
    if policy.claim:
        return {
            "name": CLAIM_VOLUME,
            "persistentVolumeClaim": {"claimName": policy.claim, "readOnly": True},
        }
    return {
        "name": volume_name(model.name),
        "hostPath": {"path": f"{policy.cache_root}/models/{model.name}", "type": "Directory"},
    }


def _near_models(spec: JSON, models: list[str], affinity: str, weight: int) -> None:
    expressions = [
        {"key": ready_label(name), "operator": "In", "values": [READY]} for name in models
    ]
    node_affinity = _dict(_dict(spec, "affinity"), "nodeAffinity")
    if affinity == "preferred":
        preferred = _list(node_affinity, PREFERRED)
        for expression in expressions:
            term = {"weight": weight, "preference": {"matchExpressions": [expression]}}
            if term not in preferred:
                preferred.append(term)
        return
    terms = _list(_dict(node_affinity, REQUIRED), "nodeSelectorTerms")
    if not terms:
        terms.append({"matchExpressions": copy.deepcopy(expressions)})
        return
    for term in terms:
        if not (term.get("matchExpressions") or term.get("matchFields")):
            # An empty term matches no node; given requirements it would match some, and
            # as terms are ORed the pod would gain nodes its author's terms exclude.
            continue
        present = _list(term, "matchExpressions")
        present.extend(copy.deepcopy(e) for e in expressions if e not in present)


def _targets(spec: JSON, text: str) -> list[JSON]:
    """The containers the `containers` annotation names (init containers too, by name),
    or every regular container."""
    containers: list[JSON] = list(spec.get("containers") or [])
    wanted = names(text)
    if not wanted:
        return containers
    by_name = {c.get("name"): c for c in [*containers, *(spec.get("initContainers") or [])]}
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        has = ", ".join(sorted(str(name) for name in by_name)) or "none"
        raise Rejected(
            f"{CONTAINERS} names {_plural('unknown container', unknown)}; the pod has: {has}"
        )
    return [by_name[name] for name in wanted]


def _choice(annotations: Mapping[str, str], key: str, allowed: tuple[str, ...]) -> str:
    value = annotations.get(key, allowed[0])
    if value not in allowed:
        raise Rejected(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _plural(noun: str, items: Iterable[str]) -> str:
    listed = list(items)
    quoted = ", ".join(repr(item) for item in listed)
    return f"{noun}{'s' if len(listed) > 1 else ''} {quoted}"


def _dict(holder: JSON, key: str) -> JSON:
    """`holder[key]`, made an empty object when missing or null."""
    if holder.get(key) is None:
        holder[key] = {}
    found: JSON = holder[key]
    return found


def _list(holder: JSON, key: str) -> list[JSON]:
    """`holder[key]`, made an empty list when missing or null."""
    if holder.get(key) is None:
        holder[key] = []
    found: list[JSON] = holder[key]
    return found
