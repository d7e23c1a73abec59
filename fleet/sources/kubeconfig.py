"""Where the management cluster is, and how to prove who we are, from a kubeconfig.

kubectl's rules for the current context, kept to what a read-only command
needs: the server with its CA (inline or a file relative to the kubeconfig),
and a client certificate, a bearer token or an exec credential plugin. TLS
verification cannot be turned off: `insecure-skip-tls-verify` and `http://`
servers are refused rather than silently trusted.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleet.sources import ReadError

JSON = dict[str, Any]
EXEC_TIMEOUT = 60.0
EXEC_API = "client.authentication.k8s.io/v1"


class KubeconfigError(ReadError):
    """The kubeconfig cannot be used as written."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    server: str
    # None: the system's trust store, as kubectl does without a CA.
    ca_pem: bytes | None = None
    server_name: str | None = None
    # Certificate and key, PEM, one after the other: what ssl loads as a chain.
    client_pem: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)


def default_path() -> Path:
    return Path.home() / ".kube" / "config"


def load_endpoint(path: Path | str | None, context: str | None = None) -> Endpoint:
    """The endpoint of a context (default: the current one) of the kubeconfig at `path`.

    `path` may list several files separated by os.pathsep, as $KUBECONFIG does; they are
    merged the way kubectl merges them: the first file to name a context, cluster or
    user wins, and so does the first current-context. Default: ~/.kube/config.
    """
    paths = [Path(p) for p in str(path or default_path()).split(os.pathsep) if p]
    configs = [(_load(p), p) for p in paths if len(paths) == 1 or p.exists()]
    if not configs:
        raise KubeconfigError(f"none of the kubeconfig files {path} exists")
    if len(configs) == 1 and not context:
        return endpoint(*configs[0])
    merged: JSON = {}
    for section, field_name in _SECTIONS:
        entries: dict[str, JSON] = {}
        for config, source in configs:
            for entry in config.get(section) or []:
                name = str(entry.get("name")) if isinstance(entry, dict) else ""
                if name and name not in entries:
                    entries[name] = _absolute(entry, field_name, source)
        merged[section] = list(entries.values())
    current = next((c["current-context"] for c, _ in configs if c.get("current-context")), None)
    merged["current-context"] = context or current
    return endpoint(merged, configs[0][1])


_SECTIONS = (("contexts", "context"), ("clusters", "cluster"), ("users", "user"))
# Fields naming files, which resolve against the kubeconfig that holds them.
_FILE_FIELDS = ("certificate-authority", "client-certificate", "client-key", "tokenFile")


def _absolute(entry: JSON, field_name: str, source: Path) -> JSON:
    body = dict(entry.get(field_name) or {})
    for name in _FILE_FIELDS:
        if isinstance(body.get(name), str):
            body[name] = str(source.parent / body[name])
    return {**entry, field_name: body}


def _load(path: Path) -> JSON:
    try:
        text = path.read_text()
    except OSError as error:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {error.strerror}") from error
    try:
        config = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as error:
        raise KubeconfigError(f"kubeconfig {path}: not valid YAML") from error
    if not isinstance(config, dict):
        raise KubeconfigError(f"kubeconfig {path}: not a kubeconfig")
    return config


def endpoint(config: JSON, path: Path) -> Endpoint:
    """The endpoint of `config`'s current context; files it names are relative to `path`."""
    cluster, user = _current(config, path)
    server = str(cluster.get("server") or "")
    if cluster.get("insecure-skip-tls-verify"):
        raise KubeconfigError(
            f"kubeconfig {path}: insecure-skip-tls-verify is set; fleet always verifies the "
            "management cluster's certificate: set certificate-authority-data instead"
        )
    if not server.startswith("https://"):
        raise KubeconfigError(
            f"kubeconfig {path}: server {server or '(none)'} is not https://; "
            "fleet reads the management cluster over TLS only"
        )
    if cluster.get("proxy-url"):
        raise KubeconfigError(f"kubeconfig {path}: proxy-url is not supported")
    for unsupported in ("auth-provider", "username", "password"):
        if user.get(unsupported):
            raise KubeconfigError(
                f"kubeconfig {path}: user {unsupported} is not supported; "
                "use a client certificate, a token or an exec plugin"
            )
    client_pem, token = (
        _exec_credential(user["exec"], path) if user.get("exec") else _user(user, path)
    )
    return Endpoint(
        server=server,
        ca_pem=_pem(cluster, "certificate-authority", path),
        server_name=cluster.get("tls-server-name") or None,
        client_pem=client_pem,
        token=token,
    )


def _user(user: JSON, path: Path) -> tuple[bytes | None, str | None]:
    """The client certificate chain and the bearer token a kubeconfig user holds."""
    token = user.get("token") or None
    if not token and user.get("tokenFile"):
        token = _read(path.parent / user["tokenFile"], path).decode().strip()
    return _chain(
        _pem(user, "client-certificate", path), _pem(user, "client-key", path), path
    ), token


def _chain(cert: bytes | None, key: bytes | None, path: Path) -> bytes | None:
    if bool(cert) != bool(key):
        raise KubeconfigError(f"kubeconfig {path}: a client certificate needs both cert and key")
    return cert + b"\n" + key if cert and key else None


def _current(config: JSON, path: Path) -> tuple[JSON, JSON]:
    name = config.get("current-context")
    if not name:
        raise KubeconfigError(f"kubeconfig {path}: no current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in config.get("contexts") or []}
    clusters = {c.get("name"): c.get("cluster") or {} for c in config.get("clusters") or []}
    users = {u.get("name"): u.get("user") or {} for u in config.get("users") or []}
    if name not in contexts:
        raise KubeconfigError(f"kubeconfig {path}: context {name} not found")
    context = contexts[name]
    if context.get("cluster") not in clusters:
        raise KubeconfigError(
            f"kubeconfig {path}: cluster {context.get('cluster')} of context {name} not found"
        )
    return clusters[context["cluster"]], users.get(context.get("user"), {})


def _pem(section: JSON, key: str, path: Path) -> bytes | None:
    """`<key>-data` (base64) or the file `<key>` names, as kubectl prefers them."""
    if section.get(f"{key}-data"):
        try:
            return base64.b64decode(section[f"{key}-data"], validate=True)
        except (binascii.Error, ValueError) as error:
            raise KubeconfigError(f"kubeconfig {path}: {key}-data is not valid base64") from error
    if section.get(key):
        return _read(path.parent / section[key], path)
    return None


def _read(file: Path, path: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as error:
        raise KubeconfigError(f"kubeconfig {path}: cannot read {file}: {error.strerror}") from error


def _exec_credential(spec: JSON, path: Path) -> tuple[bytes | None, str | None]:
    """Run an exec credential plugin, as kubectl does: its certificate chain and token.

    Its stderr is left on the terminal, where a plugin explains a failed login.
    """
    command = str(spec.get("command") or "")
    if "/" in command:
        command = str(path.parent / command)
    info = {
        "apiVersion": spec.get("apiVersion", EXEC_API),
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }
    env = {
        **os.environ,
        **{e["name"]: e["value"] for e in spec.get("env") or []},
        "KUBERNETES_EXEC_INFO": json.dumps(info),
    }
    try:
        done = subprocess.run(
            [command, *(spec.get("args") or [])],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            timeout=EXEC_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise KubeconfigError(f"kubeconfig {path}: exec plugin {command}: {error}") from error
    if done.returncode != 0:
        raise KubeconfigError(
            f"kubeconfig {path}: exec plugin {command} exited with code {done.returncode}"
        )
    try:
        status = json.loads(done.stdout)["status"]
    except (ValueError, KeyError, TypeError) as error:
        raise KubeconfigError(
            f"kubeconfig {path}: exec plugin {command} did not print an ExecCredential"
        ) from error
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    return _chain(cert and cert.encode(), key and key.encode(), path), status.get("token") or None
