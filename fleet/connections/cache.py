"""The one owner of workload-cluster clients, as Cluster API's ClusterCache.

One client per cluster, built from the kubeconfig the controller's watch
already holds (no read per call), rebuilt when the Secret's version changes
and closed when the cluster goes. Reachability is learnt from every request,
from the cluster's watches, and, for unwatched clusters nobody talked to
lately, from one shared probe, so a cluster with five profiles is probed
once, not five times.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass

from fleet.connections.client import ClusterClient, ClusterNotConnected
from fleet.connections.kubeconfig import BadKubeconfig, parse_kubeconfig

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Kubeconfig:
    """A cluster's kubeconfig as its Secret holds it (base64); `version` is uid/resourceVersion."""

    version: str
    encoded: str

    def __repr__(self) -> str:
        return f"Kubeconfig(version={self.version!r})"


class ClusterCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[Key, tuple[str, ClusterClient]] = {}

    def client(self, namespace: str, cluster: str, kubeconfig: Kubeconfig | None) -> ClusterClient:
        """The cluster's client, built on first use or when its kubeconfig changed."""
        if kubeconfig is None:
            raise ClusterNotConnected(
                cluster, f"Secret {namespace}/{cluster}-kubeconfig not found", delay=10
            )
        key = (namespace, cluster)
        with self._lock:
            cached = self._clients.get(key)
            if cached is not None and cached[0] == kubeconfig.version:
                return cached[1]
        try:
            text = base64.b64decode(kubeconfig.encoded, validate=True).decode()
        except ValueError as error:
            raise BadKubeconfig(cluster, "Secret value is not valid base64") from error
        built = ClusterClient(cluster, parse_kubeconfig(cluster, text))
        with self._lock:
            previous = self._clients.get(key)
            self._clients[key] = (kubeconfig.version, built)
        if previous is not None:
            previous[1].close()
        return built

    def forget(self, namespace: str, cluster: str) -> None:
        with self._lock:
            previous = self._clients.pop((namespace, cluster), None)
        if previous is not None:
            previous[1].close()

    def quiet_since(self, seconds: float) -> list[tuple[Key, ClusterClient]]:
        """Clients that have not heard from their cluster for `seconds`: the ones to probe."""
        horizon = time.monotonic() - seconds
        with self._lock:
            return [
                (key, client)
                for key, (_, client) in self._clients.items()
                if client.last_success < horizon
            ]

    def __len__(self) -> int:
        return len(self._clients)
