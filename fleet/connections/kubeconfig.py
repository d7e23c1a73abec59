"""Read a workload cluster's kubeconfig into what a TLS connection needs.

Only `https` servers, always verified; a kubeconfig that turns verification
off or points at plain `http` is refused before anything is sent. Keys stay
in memory. The CA and client certificate are tried once with Python's ssl
(`client_tls`, shared with `fleet status`'s reader) so that an unusable one
is refused here, with the field that holds it, not at the first request.
Python's ssl can only load a client certificate from a path, so it is
written to an anonymous memfd, loaded, and the file closed at once: no file
stays open per cluster.
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
    """Where a cluster's API is and how to authenticate to it (never logged).

    PEM bytes: `ca_pem` empty means the system's CAs; `cert_pem` and `key_pem` are the
    client certificate, empty when a token authenticates."""

    server: str
    ca_pem: bytes = b""
    cert_pem: bytes = b""
    key_pem: bytes = b""
    token: str = ""

    def __repr__(self) -> str:
        return f"Endpoint(server={self.server!r})"


def _current(config: JSON, cluster: str) -> tuple[JSON, JSON]:
    def named(section: str, field: str) -> dict[str, JSON]:
        entries = config.get(section) or []
        return {e.get("name", ""): e.get(field) or {} for e in entries if isinstance(e, dict)}

    contexts, clusters, users = (
        named("contexts", "context"),
        named("clusters", "cluster"),
        named("users", "user"),
    )
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


class UnusableTLS(ValueError):
    """A CA (`part` "ca") or a client certificate and key (`part` "client") that TLS refuses."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(reason)
        self.part = part


def client_tls(ca_pem: bytes, client_pem: bytes) -> ssl.SSLContext:
    """A verifying client TLS context: only `ca_pem` trusted (the system's CAs when empty),
    `client_pem` (certificate and key) presented when given."""
    try:
        context = ssl.create_default_context(cadata=ca_pem.decode() if ca_pem else None)
    except (ssl.SSLError, ValueError) as error:
        raise UnusableTLS("ca", str(error)) from error
    if client_pem:
        fd = os.memfd_create("fleet-client-cert", os.MFD_CLOEXEC)
        try:
            os.write(fd, client_pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        except ssl.SSLError as error:
            raise UnusableTLS("client", str(error)) from error
        finally:
            os.close(fd)
    return context


def parse_kubeconfig(cluster: str, text: str) -> Endpoint:
    """The endpoint of a kubeconfig's current context; refuses http and disabled verification."""
    try:
        # libyaml: PyYAML's own scanner spends ~30 ms on the base64 of one kubeconfig.
        config = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
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
    ca = b""
    if server.get("certificate-authority-data"):
        ca = _decode(server["certificate-authority-data"], "certificate-authority-data", cluster)
    cert = key = b""
    if has_certificate:
        cert = _decode(user["client-certificate-data"], "client-certificate-data", cluster)
        key = _decode(user["client-key-data"], "client-key-data", cluster)
    try:
        client_tls(ca, cert + b"\n" + key if cert else b"")
    except UnusableTLS as error:
        what = "certificate-authority-data" if error.part == "ca" else "client certificate or key"
        raise BadKubeconfig(cluster, f"{what} is unusable: {error}") from error
    return Endpoint(url.rstrip("/"), ca, cert, key, str(user.get("token") or ""))
