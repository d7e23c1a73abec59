"""Reads and writes on the management cluster, as plain JSON.

The controller reads CAPI Clusters (v1beta2, falling back to v1beta1 when
that is all the cluster serves), Addons, AddonProfiles and Datacenters, and
writes only AddonDeployments, status subresources, and its own finalizer on
Clusters.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from fleet.api import CAPI_GROUP, CAPI_VERSIONS, GROUP, VERSION
from fleet.helm import RegistryAccess

JSON = dict[str, Any]
TIMEOUT = (5.0, 30.0)


class Management:
    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api
        self.custom = k8s.CustomObjectsApi(api)
        self._capi_version: str | None = None

    def _json(self, function: Any, *args: Any, **kwargs: Any) -> JSON:
        response = function(*args, _preload_content=False, _request_timeout=TIMEOUT, **kwargs)
        result: JSON = json.loads(response.data)
        return result

    def _get_or_none(self, function: Any, *args: Any) -> JSON | None:
        try:
            return self._json(function, *args)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    @property
    def capi_version(self) -> str:
        """The newest Cluster API version the management cluster serves."""
        if self._capi_version is None:
            served = self._json(k8s.ApisApi(self.api).get_api_versions)
            groups = {g["name"]: [v["version"] for v in g["versions"]] for g in served["groups"]}
            versions = [v for v in CAPI_VERSIONS if v in groups.get(CAPI_GROUP, [])]
            self._capi_version = versions[0] if versions else CAPI_VERSIONS[0]
        return self._capi_version

    # Cluster API
    def cluster(self, namespace: str, name: str) -> JSON | None:
        return self._get_or_none(
            self.custom.get_namespaced_custom_object,
            CAPI_GROUP,
            self.capi_version,
            namespace,
            "clusters",
            name,
        )

    def clusters(self, namespace: str | None) -> list[JSON]:
        """The Clusters of `namespace`, or of every namespace when it is None."""
        if namespace is None:
            result = self._json(
                self.custom.list_cluster_custom_object, CAPI_GROUP, self.capi_version, "clusters"
            )
        else:
            result = self._json(
                self.custom.list_namespaced_custom_object,
                CAPI_GROUP,
                self.capi_version,
                namespace,
                "clusters",
            )
        items: list[JSON] = result["items"]
        return items

    def set_cluster_finalizers(self, body: JSON, finalizers: list[str]) -> bool:
        """Replace the Cluster's finalizers, guarded by its resourceVersion.

        Returns False when the Cluster changed since it was read (the caller reads again).
        """
        meta = body["metadata"]
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            {
                "op": "replace" if "finalizers" in meta else "add",
                "path": "/metadata/finalizers",
                "value": finalizers,
            },
        ]
        try:
            self.custom.patch_namespaced_custom_object(
                CAPI_GROUP,
                self.capi_version,
                meta["namespace"],
                "clusters",
                meta["name"],
                patch,
                _request_timeout=TIMEOUT,
                _content_type="application/json-patch+json",
            )
        except ApiException as error:
            # 422: the "test" on resourceVersion failed; 409: a conflicting write.
            if error.status in (409, 422):
                return False
            raise
        return True

    # fleet.mlops.dev
    def get(self, plural: str, namespace: str, name: str) -> JSON | None:
        return self._get_or_none(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name
        )

    def list(self, plural: str, namespace: str | None = None, selector: str = "") -> list[JSON]:
        if namespace is None:
            result = self._json(
                self.custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                plural,
                label_selector=selector,
            )
        else:
            result = self._json(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                plural,
                label_selector=selector,
            )
        items: list[JSON] = result["items"]
        return items

    def registry_access(self, repository: str) -> RegistryAccess:
        """How to reach the registry of an OCI reference, from the Datacenter serving it."""
        host = repository.removeprefix("oci://").split("/", 1)[0]
        for datacenter in self.list("datacenters"):
            registry = (datacenter.get("spec") or {}).get("registry") or {}
            if registry.get("url", "").removeprefix("https://").rstrip("/") != host:
                continue
            if registry.get("insecure"):
                return RegistryAccess(plain_http=True)
            reference = registry.get("caSecretRef")
            if reference:
                secret = self._json(
                    k8s.CoreV1Api(self.api).read_namespaced_secret,
                    reference["name"],
                    reference["namespace"],
                )
                ca = (secret.get("data") or {}).get("ca.crt", "")
                return RegistryAccess(ca_pem=base64.b64decode(ca).decode())
        return RegistryAccess()

    def datacenter(self, name: str) -> JSON | None:
        return self._get_or_none(
            self.custom.get_cluster_custom_object, GROUP, VERSION, "datacenters", name
        )

    def create(self, plural: str, namespace: str, body: JSON) -> None:
        try:
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, body, _request_timeout=TIMEOUT
            )
        except ApiException as error:
            if error.status != 409:
                raise

    def patch(self, plural: str, namespace: str, name: str, patch: JSON) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, patch, _request_timeout=TIMEOUT
        )

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
