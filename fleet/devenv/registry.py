"""One OCI registry (CNCF Distribution) per datacenter, served over TLS.

All registries' serving certificates come from one local registry CA, as an
organisation's internal CA would sign its registries; clients verify them
against `registry-ca.crt` in the state directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleet.devenv.pki import CertificateAuthority


@dataclass(frozen=True, slots=True)
class RegistryFiles:
    datacenter: str
    root: Path
    port: int
    # https URL of the registry this one is a pull-through cache of ("": none)
    upstream: str = ""

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    @property
    def config(self) -> Path:
        return self.root / "config.yml"


def registry_config(files: RegistryFiles) -> dict[str, Any]:
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(files.root / "data")},
            "delete": {"enabled": True},
        },
        "http": {
            "addr": files.host,
            # Upload sessions are signed with it: a fixed secret lets an interrupted
            # upload be resumed after the registry restarts (a random one would not).
            "secret": f"fleet-dev-{files.datacenter}-{files.port}",
            "tls": {
                "certificate": str(files.root / "tls.crt"),
                "key": str(files.root / "tls.key"),
            },
        },
    }
    if files.upstream:
        config["proxy"] = {"remoteurl": files.upstream}
    return config


def write_registry_files(
    datacenter: str, root: Path, port: int, ca: CertificateAuthority, upstream: str = ""
) -> RegistryFiles:
    """A registry's certificate and config; with `upstream`, a pull-through cache of it."""
    files = RegistryFiles(datacenter=datacenter, root=root, port=port, upstream=upstream)
    ca.issue(f"registry.{datacenter}", hosts=("127.0.0.1", "localhost"), server=True).write(
        root, "tls"
    )
    (root / "data").mkdir(parents=True, exist_ok=True)
    files.config.write_text(yaml.safe_dump(registry_config(files), sort_keys=False))
    return files


def registry_command(binary: Path, files: RegistryFiles) -> list[str]:
    return [str(binary), "serve", str(files.config)]


# Distribution v3 exports OpenTelemetry traces to localhost:4318 unless told not to.
REGISTRY_ENV = {"OTEL_TRACES_EXPORTER": "none"}


def registry_env(files: RegistryFiles, ca_file: Path) -> dict[str, str]:
    """A pull-through cache verifies its upstream with the local CA (Go reads SSL_CERT_FILE)."""
    return {**REGISTRY_ENV, "SSL_CERT_FILE": str(ca_file)} if files.upstream else REGISTRY_ENV
