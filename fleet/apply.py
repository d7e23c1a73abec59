"""Apply, check, compare and prune an add-on's objects on one workload cluster.

Server-side apply with field manager `fleet`, CRDs first (waiting until they
are Established, so the add-on's own custom resources can follow), then the
rest in lightkube's order. Every object carries the ApplySet label
`applyset.kubernetes.io/part-of`; the add-on's inventory (kept in the
AddonDeployment's status) is what gets pruned when an object is no longer
rendered. Drift is found with a dry-run apply: if applying our fields again
would change the live object, someone changed one of them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from fleet.api import FIELD_MANAGER
from fleet.errors import PermanentError, TemporaryError
from fleet.health import Health, health
from fleet.order import apply_sorted, delete_sorted
from fleet.remote import TIMEOUT, ClusterNotConnected, Remote, unreachable, unreachable_reason

JSON = dict[str, Any]
APPLYSET_LABEL = "applyset.kubernetes.io/part-of"
ADDON_ANNOTATION = "fleet.mlops.dev/addon"
CRD_ESTABLISH_SECONDS = 30.0
IGNORED_METADATA = (
    "managedFields",
    "resourceVersion",
    "generation",
    "uid",
    "creationTimestamp",
    "selfLink",
)


class ApplyError(PermanentError):
    """The cluster refused an object (invalid, forbidden, unknown kind)."""


class KindNotServed(ApplyError):
    """The cluster serves no such kind (e.g. its CRD is not installed, or was removed)."""


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"

    def to_json(self) -> JSON:
        ref = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        return ref | ({"namespace": self.namespace} if self.namespace else {})

    @classmethod
    def from_json(cls, data: JSON) -> ObjectRef:
        return cls(data["apiVersion"], data["kind"], data.get("namespace", ""), data["name"])

    @classmethod
    def of(cls, body: JSON) -> ObjectRef:
        meta = body["metadata"]
        return cls(body["apiVersion"], body["kind"], meta.get("namespace", ""), meta["name"])


def applyset_id(parent_name: str, parent_namespace: str) -> str:
    """The ApplySet id of an add-on on a cluster, in the format of the ApplySet KEP."""
    key = f"{parent_name}.{parent_namespace}.AddonDeployment.fleet.mlops.dev"
    encoded = base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()).decode().rstrip("=")
    return f"applyset-{encoded}-v1"


def changed_paths(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths at which two JSON values differ (pure; used to say what drifted)."""
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


class Applier:
    """Talks to one workload cluster on behalf of one add-on."""

    def __init__(self, remote: Remote, applyset: str, addon_label: str) -> None:
        self.remote = remote
        self.applyset = applyset
        self.addon_label = addon_label

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, _request_timeout=TIMEOUT, **kwargs)
        except (NotFoundError, ResourceNotFoundError):
            raise
        except ApiException as error:
            if error.status in (429, 500, 502, 503, 504):
                raise TemporaryError(f"{what}: {error.status} {error.reason}", delay=5) from error
            raise ApplyError(f"{what}: {error.status} {_api_message(error)}") from error
        except Exception as error:
            if unreachable(error):
                raise ClusterNotConnected(
                    f"{self.remote.cluster}: {unreachable_reason(error)}"
                ) from error
            raise

    def _resource(self, api_version: str, kind: str) -> Any:
        try:
            return self.remote.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError as error:
            raise KindNotServed(
                f"{kind} ({api_version}) is not served by cluster {self.remote.cluster}"
            ) from error

    def prepare(self, body: JSON, default_namespace: str) -> JSON:
        """Set the namespace of namespaced objects that name none, and the ApplySet labels."""
        resource = self._resource(body["apiVersion"], body["kind"])
        meta = dict(body["metadata"])
        if resource.namespaced and not meta.get("namespace"):
            meta["namespace"] = default_namespace
        if not resource.namespaced:
            meta.pop("namespace", None)
        meta["labels"] = {**(meta.get("labels") or {}), APPLYSET_LABEL: self.applyset}
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            ADDON_ANNOTATION: self.addon_label,
        }
        return {**body, "metadata": meta}

    def apply(
        self, objects: Iterable[JSON], default_namespace: str, *, dry_run: bool = False
    ) -> list[ObjectRef]:
        """Server-side apply every object; returns the refs of what the server now holds.

        Objects are prepared one by one just before they are sent, because a
        custom resource's scope is only known once its CRD is established.
        """
        ordered = apply_sorted(objects)
        crds = [o for o in ordered if o["kind"] == "CustomResourceDefinition"]
        applied = [self._apply_one(self.prepare(body, default_namespace), dry_run) for body in crds]
        if crds and not dry_run:
            self._wait_established([o["metadata"]["name"] for o in crds])
        applied += [
            self._apply_one(self.prepare(body, default_namespace), dry_run)
            for body in ordered[len(crds) :]
        ]
        return [ObjectRef.of(body) for body in applied]

    def _apply_one(self, body: JSON, dry_run: bool) -> JSON:
        resource = self._resource(body["apiVersion"], body["kind"])
        extra = {"dry_run": "All"} if dry_run else {}
        result = self._call(
            f"apply {ObjectRef.of(body)}",
            self.remote.dynamic.server_side_apply,
            resource,
            body=body,
            namespace=body["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
            **extra,
        )
        return dict(result.to_dict())

    def _wait_established(self, names: list[str]) -> None:
        resource = self._resource("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        deadline = time.monotonic() + CRD_ESTABLISH_SECONDS
        for name in names:
            while not health(
                self._call(f"read CRD {name}", resource.get, name=name).to_dict()
            ).ready:
                if time.monotonic() > deadline:
                    raise TemporaryError(
                        f"CRD {name} not Established after {CRD_ESTABLISH_SECONDS}s"
                    )
                time.sleep(0.2)
        self.remote.dynamic.resources.invalidate_cache()

    def read(self, ref: ObjectRef) -> JSON | None:
        resource = self._resource(ref.api_version, ref.kind)
        try:
            found = self._call(
                f"read {ref}", resource.get, name=ref.name, namespace=ref.namespace or None
            )
        except NotFoundError:
            return None
        return dict(found.to_dict())

    def health(self, refs: Iterable[ObjectRef]) -> list[tuple[str, Health]]:
        states = []
        for ref in refs:
            live = self.read(ref)
            states.append((str(ref), health(live) if live else Health("Progressing", "not found")))
        return states

    def drift(self, objects: Iterable[JSON], default_namespace: str) -> list[str]:
        """Objects that applying again would change, each with the fields that differ."""
        found = []
        for body in apply_sorted(objects):
            try:
                prepared = self.prepare(body, default_namespace)
            except KindNotServed:
                found.append(f"{body['kind']} {body['metadata']['name']} (kind not served)")
                continue
            ref = ObjectRef.of(prepared)
            live = self.read(ref)
            if live is None:
                found.append(f"{ref} (missing)")
                continue
            after = self._apply_one(prepared, dry_run=True)
            paths = changed_paths(_comparable(after), _comparable(live))
            if paths:
                found.append(f"{ref} ({', '.join(paths[:3])}{', …' if len(paths) > 3 else ''})")
        return found

    def delete(self, refs: Iterable[ObjectRef]) -> list[ObjectRef]:
        """Delete objects in reverse apply order; returns those that existed."""
        bodies = [
            {
                "apiVersion": r.api_version,
                "kind": r.kind,
                "metadata": {"name": r.name, "namespace": r.namespace},
            }
            for r in refs
        ]
        deleted = []
        for body in delete_sorted(bodies):
            ref = ObjectRef.of(body)
            try:
                resource = self._resource(ref.api_version, ref.kind)
                self._call(
                    f"delete {ref}", resource.delete, name=ref.name, namespace=ref.namespace or None
                )
                deleted.append(ref)
            except (NotFoundError, KindNotServed):
                continue
        return deleted


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body).get("message", error.reason))
    except (TypeError, ValueError):
        return str(error.reason)
