"""Read a workload cluster's kubeconfig into what a TLS connection needs.

Only `https` servers, always verified; a kubeconfig that turns verification
off or points at plain `http` is refused before anything is sent. Keys stay
in memory: Python's ssl can only load a client certificate from a path, so
it is written to an anonymous memfd, loaded, and the file closed at once: no
file stays open per cluster.
"""

from __future__ import annotations

import base64
import os
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from fleet.errors import PermanentError

JSON = dict[str, Any]


class BadKubeconfig(PermanentError):
    """The kubeconfig is missing, malformed, or asks for something fleet refuses."""

    def __init__(self, cluster: str, problem: str) -> None:
        super().__init__(f"{cluster}: kubeconfig {problem}")
        self.cluster, self.problem = cluster, problem


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a cluster's API is and how to authenticate to it (never logged)."""

    server: str
    tls: ssl.SSLContext
    token: str = ""

    def __repr__(self) -> str:
        return f"Endpoint(server={self.server!r})"


def _current(config: JSON, cluster: str) -> tuple[JSON, JSON]:
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
    users = {u["name"]: u["user"] for u in config.get("users") or []}
    context = contexts.get(config.get("current-context", "")) or next(iter(contexts.values()), None)
    if context is None:
        raise BadKubeconfig(cluster, "has no context")
    try:
        return clusters[context["cluster"]], users[context["user"]]
    except KeyError as error:
        raise BadKubeconfig(cluster, f"context names unknown {error}") from error


def _decode(value: str, what: str, cluster: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as error:
        raise BadKubeconfig(cluster, f"{what} is not valid base64") from error


def _load_client_certificate(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    fd = os.memfd_create("fleet-client-cert", os.MFD_CLOEXEC)
    try:
        os.write(fd, cert + b"\n" + key)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def parse_kubeconfig(cluster: str, text: str) -> Endpoint:
    """The endpoint of a kubeconfig's current context; refuses http and disabled verification."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BadKubeconfig(cluster, "is not valid YAML") from error
    if not isinstance(config, dict):
        raise BadKubeconfig(cluster, "is not a mapping")
    server, user = _current(config, cluster)
    url = str(server.get("server") or "")
    if urlsplit(url).scheme != "https":
        raise BadKubeconfig(
            cluster, f"server {url!r} is not https: fleet sends credentials only over TLS"
        )
    if server.get("insecure-skip-tls-verify"):
        raise BadKubeconfig(cluster, "disables TLS verification; fleet refuses it")
    has_certificate = user.get("client-certificate-data") and user.get("client-key-data")
    if not has_certificate and not user.get("token"):
        raise BadKubeconfig(cluster, "user has neither a client certificate nor a token")
    # Trust the cluster's own CA only (and the system's only when the kubeconfig names none).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if server.get("certificate-authority-data"):
        ca = _decode(server["certificate-authority-data"], "certificate-authority-data", cluster)
        try:
            context.load_verify_locations(cadata=ca.decode())
        except (ssl.SSLError, ValueError) as error:
            raise BadKubeconfig(
                cluster, f"certificate-authority-data is unusable: {error}"
            ) from error
    else:
        context.load_default_certs()
    if has_certificate:
        try:
            _load_client_certificate(
                context,
                _decode(user["client-certificate-data"], "client-certificate-data", cluster),
                _decode(user["client-key-data"], "client-key-data", cluster),
            )
        except ssl.SSLError as error:
            raise BadKubeconfig(
                cluster, f"client certificate or key is unusable: {error}"
            ) from error
    return Endpoint(server=url.rstrip("/"), tls=context, token=str(user.get("token") or ""))
