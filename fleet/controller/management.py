"""Writes to the management cluster, as plain JSON. Reads come from the watch caches.

The controller writes only AddonDeployments, its profiles' ControllerRevisions,
status subresources, Events, and its own finalizer on Clusters and
AddonDeployments; every write is
guarded by what it expects (resourceVersion), so a stale cache costs a
retry, never a lost update.
"""

from __future__ import annotations

import base64
import datetime
import socket
from collections.abc import Iterable
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from fleet.api import CAPI_GROUP, GROUP, VERSION
from fleet.api.models import Cluster
from fleet.render.helm import RegistryAccess, serving_registry

JSON = dict[str, Any]
TIMEOUT = (5.0, 30.0)


class Management:
    def __init__(self, api: k8s.ApiClient) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self.apps = k8s.AppsV1Api(api)
        self.host = socket.gethostname()

    def create(self, plural: str, namespace: str, body: JSON) -> JSON | None:
        """The object as created, or None when it was there already."""
        try:
            created: JSON = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, body, _request_timeout=TIMEOUT
            )
        except ApiException as error:
            if error.status != 409:
                raise
            return None
        return created

    def patch(self, plural: str, namespace: str, name: str, patch: JSON) -> JSON:
        patched: JSON = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, patch, _request_timeout=TIMEOUT
        )
        return patched

    def create_revision(self, body: JSON) -> None:
        """Keep a profile revision (a ControllerRevision); one that is there already stays."""
        try:
            self.apps.create_namespaced_controller_revision(
                body["metadata"]["namespace"], body, _request_timeout=TIMEOUT
            )
        except ApiException as error:
            if error.status != 409:
                raise

    def delete_revision(self, namespace: str, name: str) -> None:
        try:
            self.apps.delete_namespaced_controller_revision(
                name, namespace, _request_timeout=TIMEOUT
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def patch_status(self, plural: str, namespace: str, name: str, status: JSON) -> None:
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                {"status": status},
                _request_timeout=TIMEOUT,
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def delete(self, plural: str, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, _request_timeout=TIMEOUT
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def set_finalizers(self, plural: str, meta: JSON, finalizers: list[str]) -> bool:
        """Replace the finalizers of one of fleet's objects (see `_set_finalizers`)."""
        return self._set_finalizers(GROUP, VERSION, plural, meta, finalizers)

    def set_cluster_finalizers(self, cluster: Cluster, finalizers: list[str]) -> bool:
        """Replace a Cluster's finalizers, in the API version it was read in."""
        group, _, version = cluster.api_version.rpartition("/")
        meta = {
            "namespace": cluster.namespace,
            "name": cluster.name,
            "resourceVersion": cluster.resource_version,
        }
        return self._set_finalizers(
            group or CAPI_GROUP, version or "v1beta2", "clusters", meta, finalizers
        )

    def _set_finalizers(
        self, group: str, version: str, plural: str, meta: JSON, finalizers: list[str]
    ) -> bool:
        """Replace an object's finalizers, guarded by the resourceVersion it was read at.

        Returns False when the object changed or went since it was read (the caller
        looks again). JSON patch `add` sets the field whether or not it exists.
        """
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            {"op": "add", "path": "/metadata/finalizers", "value": finalizers},
        ]
        try:
            self.custom.patch_namespaced_custom_object(
                group,
                version,
                meta["namespace"],
                plural,
                meta["name"],
                patch,
                _request_timeout=TIMEOUT,
                _content_type="application/json-patch+json",
            )
        except ApiException as error:
            # 422: the "test" on resourceVersion failed; 409: a conflicting write; 404: gone.
            if error.status in (404, 409, 422):
                return False
            raise
        return True

    def event(self, involved: JSON, kind: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about one of fleet's objects."""
        meta = involved["metadata"]
        moment = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": involved.get("kind", ""),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "fleet-controller", "host": self.host},
            "firstTimestamp": moment,
            "lastTimestamp": moment,
            "count": 1,
            "reportingComponent": "fleet-controller",
            "reportingInstance": self.host,
        }
        self.core.create_namespaced_event(meta["namespace"], body, _request_timeout=TIMEOUT)

    def secret(self, namespace: str, name: str) -> tuple[str, dict[str, bytes]] | None:
        """A Secret's version (uid/resourceVersion, which changes when it rotates) and its
        data decoded; None when it is missing."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace, _request_timeout=TIMEOUT)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        data = {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}
        return f"{secret.metadata.uid}/{secret.metadata.resource_version}", data

    def registry_access(self, repository: str, datacenters: Iterable[JSON]) -> RegistryAccess:
        """How to reach the registry of an OCI reference, from the Datacenter serving it."""
        registry = serving_registry(repository, datacenters) or {}
        if registry.get("insecure"):
            return RegistryAccess(plain_http=True)
        reference = registry.get("caSecretRef")
        if reference:
            secret = self.core.read_namespaced_secret(
                reference["name"], reference["namespace"], _request_timeout=TIMEOUT
            )
            ca = (secret.data or {}).get("ca.crt", "")
            return RegistryAccess(ca_pem=base64.b64decode(ca).decode())
        return RegistryAccess()
