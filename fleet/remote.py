"""Clients for workload clusters, built from their `<cluster>-kubeconfig` Secrets.

One client per cluster, cached and rebuilt when the Secret's resourceVersion
changes. Certificates and keys never touch the disk: they live in anonymous
in-memory files (memfd) that the TLS layer reads by /proc path. TLS
verification is always on; a kubeconfig that turns it off is refused.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from fleet.api.models import Cluster
from fleet.errors import PermanentError, TemporaryError

JSON = dict[str, Any]
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 20.0
TIMEOUT = (CONNECT_TIMEOUT, READ_TIMEOUT)


class ClusterNotConnected(TemporaryError):
    """The workload cluster's API cannot be reached now."""


class BadKubeconfig(PermanentError):
    """The kubeconfig Secret is missing, malformed, or asks for something fleet refuses."""


def unreachable(error: BaseException) -> bool:
    """Whether an exception from a client call means the cluster could not be reached."""
    return isinstance(error, urllib3.exceptions.HTTPError | OSError | TimeoutError)


@dataclass(slots=True)
class Remote:
    cluster: str
    version: str
    api: k8s.ApiClient
    _fds: list[int] = field(default_factory=list)
    _dynamic: DynamicClient | None = None
    _discovery_cache: str = ""

    @property
    def dynamic(self) -> DynamicClient:
        if self._dynamic is None:
            try:
                self._dynamic = DynamicClient(self.api, cache_file=self._discovery_cache)
            except ApiException as error:
                raise ClusterNotConnected(f"{self.cluster}: discovery: {error.reason}") from error
            except Exception as error:
                if unreachable(error):
                    raise ClusterNotConnected(
                        f"{self.cluster}: {unreachable_reason(error)}"
                    ) from error
                raise
        return self._dynamic

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        self.api.close()
        Path(self._discovery_cache).unlink(missing_ok=True)


def unreachable_reason(error: BaseException) -> str:
    """A one-line reason for an unreachable cluster (urllib3's messages nest several deep)."""
    reason = getattr(error, "reason", None) or error
    text = str(reason)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "connection timed out"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS certificate verification failed"
    return text.split(": ", 1)[-1][:200]


def _memfd(name: str, data: bytes) -> tuple[int, str]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd, f"/proc/{os.getpid()}/fd/{fd}"


def _decode(value: str, what: str, cluster: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as error:
        raise BadKubeconfig(f"{cluster}: kubeconfig {what} is not valid base64") from error


def _current(config: JSON, cluster: str) -> tuple[JSON, JSON]:
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
    users = {u["name"]: u["user"] for u in config.get("users") or []}
    context = contexts.get(config.get("current-context", "")) or next(iter(contexts.values()), None)
    if context is None:
        raise BadKubeconfig(f"{cluster}: kubeconfig has no context")
    try:
        return clusters[context["cluster"]], users[context["user"]]
    except KeyError as error:
        raise BadKubeconfig(f"{cluster}: kubeconfig context names unknown {error}") from error


def build_remote(cluster: str, version: str, kubeconfig: str, discovery_dir: str) -> Remote:
    try:
        config = yaml.safe_load(kubeconfig)
    except yaml.YAMLError as error:
        raise BadKubeconfig(f"{cluster}: kubeconfig is not valid YAML") from error
    if not isinstance(config, dict):
        raise BadKubeconfig(f"{cluster}: kubeconfig is not a mapping")
    server, user = _current(config, cluster)
    if server.get("insecure-skip-tls-verify"):
        raise BadKubeconfig(f"{cluster}: kubeconfig disables TLS verification; fleet refuses it")
    configuration = k8s.Configuration()
    configuration.host = server["server"]
    configuration.verify_ssl = True
    configuration.retries = 0
    has_certificate = user.get("client-certificate-data") and user.get("client-key-data")
    if not has_certificate and not user.get("token"):
        raise BadKubeconfig(f"{cluster}: kubeconfig user has neither client certificate nor token")
    fds = []
    files = [("ssl_ca_cert", "certificate-authority-data", server)]
    if has_certificate:
        files += [
            ("cert_file", "client-certificate-data", user),
            ("key_file", "client-key-data", user),
        ]
    else:
        configuration.api_key = {"authorization": user["token"]}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    for attribute, key, section in files:
        if section.get(key):
            fd, path = _memfd(key, _decode(section[key], key, cluster))
            fds.append(fd)
            setattr(configuration, attribute, path)
    return Remote(
        cluster=cluster,
        version=version,
        api=k8s.ApiClient(configuration),
        _fds=fds,
        _discovery_cache=str(Path(discovery_dir) / f"{cluster}-{version.replace('/', '-')}.json"),
    )


class RemoteClusters:
    """The cache of workload-cluster clients, keyed by cluster and Secret version."""

    def __init__(self, management: k8s.ApiClient) -> None:
        self._core = k8s.CoreV1Api(management)
        self._lock = threading.Lock()
        self._remotes: dict[tuple[str, str], Remote] = {}
        self._discovery_dir = tempfile.mkdtemp(prefix="fleet-discovery-")

    def for_cluster(self, cluster: Cluster) -> Remote:
        secret_name = f"{cluster.name}-kubeconfig"
        try:
            response = self._core.read_namespaced_secret(
                secret_name, cluster.namespace, _request_timeout=TIMEOUT, _preload_content=False
            )
        except ApiException as error:
            if error.status == 404:
                raise ClusterNotConnected(
                    f"{cluster.name}: Secret {cluster.namespace}/{secret_name} not found", delay=10
                ) from error
            raise
        secret = json.loads(response.data)
        version = f"{secret['metadata']['uid']}/{secret['metadata']['resourceVersion']}"
        key = (cluster.namespace, cluster.name)
        with self._lock:
            cached = self._remotes.get(key)
            if cached is not None and cached.version == version:
                return cached
            value = (secret.get("data") or {}).get("value")
            if not value:
                raise BadKubeconfig(f"{cluster.name}: Secret {secret_name} has no key 'value'")
            remote = build_remote(
                cluster.name,
                version,
                _decode(value, "Secret value", cluster.name).decode(),
                self._discovery_dir,
            )
            if cached is not None:
                cached.close()
            self._remotes[key] = remote
            return remote

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            remote = self._remotes.pop((namespace, name), None)
        if remote is not None:
            remote.close()
