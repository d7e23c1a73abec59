"""Carry out a plan for one add-on on one workload cluster: find, apply, prune, compare.

Server-side apply with field manager `fleet`, in lightkube's order (CRDs
first, webhooks last). Every object carries the ApplySet label
`applyset.kubernetes.io/part-of`; what this add-on owns on a cluster is found
by listing that label over the kinds its record names, so prune and cleanup
can only ever touch objects fleet labelled, and delete them by uid.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.api import APPLYSET_LABEL
from fleet.connections.client import ApiError, ClusterClient, KindNotServed, Resource
from fleet.errors import PermanentError, TemporaryError
from fleet.health import RULES as HEALTH_RULES
from fleet.health import health
from fleet.order import apply_sorted, delete_sorted
from fleet.plan import Live, ObjectKey, Record, live_object

JSON = dict[str, Any]
ADDON_ANNOTATION = "fleet.mlops.dev/addon"
IGNORED_METADATA = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp")


class ApplyFailed(PermanentError):
    """An object was refused; the objects before it were applied and are recorded."""

    def __init__(self, key: ObjectKey, reason: str, applied: list[Live]) -> None:
        super().__init__(f"{key} was refused: {reason}")
        self.key, self.reason, self.applied = key, reason, applied


class WaitingForCRD(TemporaryError):
    """A CRD the add-on applied is not Established yet; its objects follow on the next pass."""


def applyset_id(parent_name: str, parent_namespace: str) -> str:
    """The ApplySet id of an add-on on a cluster, in the format of the ApplySet KEP."""
    key = f"{parent_name}.{parent_namespace}.AddonDeployment.fleet.mlops.dev"
    encoded = base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()).decode().rstrip("=")
    return f"applyset-{encoded}-v1"


def changed_paths(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths at which two JSON values differ (pure; used to say what a dry run would change)."""
    if isinstance(desired, dict) and isinstance(live, dict):
        paths: list[str] = []
        for key in sorted(set(desired) | set(live)):
            paths += changed_paths(
                desired.get(key), live.get(key), f"{path}.{key}" if path else key
            )
        return paths
    return [] if desired == live else [path or "."]


def _comparable(body: JSON) -> JSON:
    meta = {k: v for k, v in body.get("metadata", {}).items() if k not in IGNORED_METADATA}
    return {k: v for k, v in body.items() if k != "status"} | {"metadata": meta}


def crd_scopes(objects: Iterable[JSON]) -> dict[tuple[str, str], bool]:
    """(group, kind) -> namespaced, for the CRDs among an add-on's own objects."""
    scopes = {}
    for body in objects:
        if body.get("kind") == "CustomResourceDefinition":
            spec = body.get("spec") or {}
            kind = (spec.get("names") or {}).get("kind", "")
            scopes[(spec.get("group", ""), kind)] = spec.get("scope") == "Namespaced"
    return scopes


@dataclass(slots=True)
class AddonOnCluster:
    """One add-on's objects on one cluster, under one ApplySet id."""

    client: ClusterClient
    applyset: str
    addon_label: str

    def _resource(self, api_version: str, kind: str) -> Resource:
        return self.client.resource(api_version, kind)

    def prepare(self, objects: Iterable[JSON], default_namespace: str) -> list[JSON]:
        """Objects in apply order, with their namespace settled and the ApplySet label set."""
        objects = apply_sorted(objects)
        scopes = crd_scopes(objects)
        prepared = []
        for body in objects:
            key = ObjectKey.of(body)
            if (key.group, key.kind) in scopes:
                namespaced = scopes[(key.group, key.kind)]
            else:
                namespaced = self._resource(body["apiVersion"], body["kind"]).namespaced
            meta = dict(body["metadata"])
            if namespaced and not meta.get("namespace"):
                meta["namespace"] = default_namespace
            if not namespaced:
                meta.pop("namespace", None)
            meta["labels"] = {**(meta.get("labels") or {}), APPLYSET_LABEL: self.applyset}
            meta["annotations"] = {
                **(meta.get("annotations") or {}),
                ADDON_ANNOTATION: self.addon_label,
            }
            prepared.append({**body, "metadata": meta})
        return prepared

    def owned(self, record: Record, *, bodies: bool = False) -> dict[ObjectKey, Live]:
        """Every object on the cluster that carries this add-on's ApplySet label."""
        return find_owned(self.client, {self.applyset: record}, bodies=bodies)[self.applyset]

    def foreign(
        self, desired: Iterable[JSON], owned: Mapping[ObjectKey, Live]
    ) -> dict[ObjectKey, tuple[str, ...]]:
        """Desired objects that exist without this add-on's label, with their field managers.

        One GET for a lone object, one metadata-only LIST for several of a kind in a
        namespace; nothing inside a namespace found not to exist.
        """
        groups: dict[tuple[str, str, str], list[ObjectKey]] = {}
        for body in desired:
            key = ObjectKey.of(body)
            if key not in owned:
                groups.setdefault((body["apiVersion"], key.kind, key.namespace), []).append(key)
        found = {}
        absent: set[str] = set()
        for (api_version, kind, namespace), keys in groups.items():
            if namespace in absent:
                continue
            try:
                resource = self._resource(api_version, kind)
            except KindNotServed:
                continue
            if len(keys) > 1:
                listed = self.client.list(resource, namespace=namespace, metadata=True)
                present = {body["metadata"]["name"]: body["metadata"] for body in listed}
                metas = {k: present.get(k.name) for k in keys}
            else:
                live = self.client.get(resource, namespace, keys[0].name)
                metas = {keys[0]: live["metadata"] if live else None}
            for key, meta in metas.items():
                if meta is not None:
                    found[key] = live_object({"metadata": meta, "kind": kind}).managers
                elif kind == "Namespace" and api_version == "v1":
                    absent.add(key.name)
        return found

    def apply(self, bodies: Iterable[JSON]) -> list[Live]:
        """Apply in order; CRDs must be Established before the objects that follow them."""
        applied: list[Live] = []
        crds: list[str] = []
        for body in bodies:
            key = ObjectKey.of(body)
            if crds and body["kind"] != "CustomResourceDefinition":
                self._wait_established(crds)
                crds = []
            try:
                resource = self._resource(body["apiVersion"], body["kind"])
                result = self.client.apply(resource, body, force=True)
            except (ApiError, KindNotServed) as error:
                raise ApplyFailed(key, _reason(error), applied) from error
            applied.append(live_object(result))
            if body["kind"] == "CustomResourceDefinition":
                crds.append(body["metadata"]["name"])
        return applied

    def _wait_established(self, names: list[str]) -> None:
        resource = self._resource("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        for name in names:
            live = self.client.get(resource, "", name)
            if live is None or not health(live).ready:
                raise WaitingForCRD(f"waiting for CRD {name} to be Established", delay=1)

    def dry_run(self, bodies: Iterable[JSON], owned: Mapping[ObjectKey, Live]) -> list[str]:
        """What applying would change, object by object, without changing anything."""
        changes = []
        for body in bodies:
            key = ObjectKey.of(body)
            live = owned.get(key)
            if live is None:
                changes.append(f"{key} (would be created)")
                continue
            after = self.client.apply(
                self._resource(body["apiVersion"], body["kind"]), body, force=True, dry_run=True
            )
            paths = changed_paths(_comparable(after), _comparable(live.body))
            if paths:
                more = ", …" if len(paths) > 3 else ""
                changes.append(f"{key} ({', '.join(paths[:3])}{more})")
        return changes

    def delete(self, objects: Iterable[Live]) -> list[ObjectKey]:
        """Delete objects this add-on owns, in reverse apply order, each by its uid."""
        by_key = {o.key: o for o in objects}
        bodies = [
            {
                "apiVersion": o.api_version,
                "kind": o.key.kind,
                "metadata": {"name": o.key.name, "namespace": o.key.namespace},
            }
            for o in by_key.values()
        ]
        deleted = []
        for body in delete_sorted(bodies):
            key = ObjectKey.of(body)
            live = by_key[key]
            if live.body.get("metadata", {}).get("labels", {}).get(APPLYSET_LABEL) != self.applyset:
                continue
            resource = self._resource(live.api_version, key.kind)
            if self.client.delete(resource, key.namespace, key.name, live.uid):
                deleted.append(key)
        return deleted


def addon_on_cluster(
    client: ClusterClient, namespace: str, deployment: str, profile: str, addon: str
) -> AddonOnCluster:
    """The ApplySet of one add-on of a profile's AddonDeployment on its cluster."""
    return AddonOnCluster(
        client,
        applyset_id(f"{deployment}.{addon}", namespace),
        f"{namespace}/{profile}/{addon}",
    )


def find_owned(
    client: ClusterClient, records: Mapping[str, Record], *, bodies: bool = False
) -> dict[str, dict[ObjectKey, Live]]:
    """Every object on the cluster labelled with one of these ApplySet ids, by id.

    One LIST per kind for all the ids that record it (`part-of in (…)`), inside the
    one namespace they record when there is just one. Kinds with a health rule come
    whole (their status decides health); the rest as metadata only, unless `bodies`
    asks for every object whole (a dry run compares them).
    """
    found: dict[str, dict[ObjectKey, Live]] = {applyset: {} for applyset in records}
    by_kind: dict[tuple[str, str], list[str]] = {}
    for applyset, record in records.items():
        for kind in record.kinds():
            by_kind.setdefault(kind, []).append(applyset)
    for (api_version, kind_name), applysets in by_kind.items():
        try:
            resource = client.resource(api_version, kind_name)
        except KindNotServed:
            continue
        namespaces = {n for a in applysets for n in records[a].namespaces}
        namespace = next(iter(namespaces)) if resource.namespaced and len(namespaces) == 1 else ""
        selector = f"{APPLYSET_LABEL} in ({','.join(sorted(applysets))})"
        metadata = not bodies and kind_name not in HEALTH_RULES
        for body in client.list(resource, selector, namespace, metadata=metadata):
            live = live_object(body)
            owner = (body["metadata"].get("labels") or {}).get(APPLYSET_LABEL, "")
            if owner in found:
                found[owner][live.key] = live
    return found


def _reason(error: BaseException) -> str:
    if isinstance(error, ApiError):
        if error.code == 404 and "namespaces" in error.message and "not found" in error.message:
            return (
                f"{error.message}: the namespace does not exist on the cluster; "
                "render a Namespace in the add-on or create it first"
            )
        return f"{error.code} {error.reason}: {error.message}"
    return str(error)
