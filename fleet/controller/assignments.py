"""Tell a workload cluster which models its nodes cache, and read back how far they are.

Each ModelArtifact applies its own key of `fleet-system/fleet-models` with a field
manager of its own (see `fleet.nodecache`), so taking a model away is applying the
ConfigMap again without that key: the API server drops what only that manager held.
A ConfigMap of that name that fleet did not make is left alone, as the pull Secret is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fleet.api import LABEL_CLUSTER
from fleet.connections.cache import ClusterCache, Kubeconfig
from fleet.errors import PermanentError
from fleet.nodecache import CATALOGUE_NAME, CATALOGUE_NAMESPACE, Assignment, field_manager

JSON = dict[str, Any]
MANAGED_BY = "app.kubernetes.io/managed-by"


class CatalogueTaken(PermanentError):
    """The cluster has a ConfigMap of the catalogue's name that fleet did not make."""


@dataclass(slots=True)
class Assigner:
    connections: ClusterCache
    # (namespace, cluster, model) -> the assignment text last applied there
    _applied: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def assign(
        self,
        namespace: str,
        cluster: str,
        kubeconfig: Kubeconfig | None,
        model: str,
        assignment: Assignment,
    ) -> None:
        key, text = (namespace, cluster, model), assignment.to_text()
        if self._applied.get(key) == text:
            return
        self._apply(namespace, cluster, kubeconfig, model, {model: text})
        self._applied[key] = text

    def unassign(
        self, namespace: str, cluster: str, kubeconfig: Kubeconfig | None, model: str
    ) -> None:
        self._apply(namespace, cluster, kubeconfig, model, {})
        self._applied.pop((namespace, cluster, model), None)

    def nodes(self, namespace: str, cluster: str, kubeconfig: Kubeconfig | None) -> Iterator[JSON]:
        """The cluster's Nodes, metadata only (labels and annotations are all it needs)."""
        client = self.connections.client(namespace, cluster, kubeconfig)
        return client.list(client.resource("v1", "Node"), metadata=True)

    def forget(self, namespace: str, model: str) -> None:
        for key in [k for k in self._applied if (k[0], k[2]) == (namespace, model)]:
            del self._applied[key]

    def _apply(
        self,
        namespace: str,
        cluster: str,
        kubeconfig: Kubeconfig | None,
        model: str,
        data: dict[str, str],
    ) -> None:
        client = self.connections.client(namespace, cluster, kubeconfig)
        client.apply(
            client.resource("v1", "Namespace"),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CATALOGUE_NAMESPACE}},
            force=False,
        )
        configmaps = client.resource("v1", "ConfigMap")
        found = client.get(configmaps, CATALOGUE_NAMESPACE, CATALOGUE_NAME)
        labels = ((found or {}).get("metadata") or {}).get("labels") or {}
        if found is not None and labels.get(MANAGED_BY) != "fleet":
            raise CatalogueTaken(
                f"cluster {namespace}/{cluster}: ConfigMap {CATALOGUE_NAMESPACE}/{CATALOGUE_NAME} "
                "exists and was not made by fleet: left as it is"
            )
        if found is None and not data:
            return
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": CATALOGUE_NAME,
                "namespace": CATALOGUE_NAMESPACE,
                "labels": {MANAGED_BY: "fleet", LABEL_CLUSTER: cluster},
            },
            "data": data,
        }
        client.apply(configmaps, body, force=False, field_manager=field_manager(namespace, model))
