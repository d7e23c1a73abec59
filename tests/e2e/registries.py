"""Registries of a test's own: real CNCF Distribution processes (the local fleet's build),
over TLS signed by a CA of the test's, optionally with htpasswd auth or as a pull-through
cache of another. For what the local fleet's datacenter registries cannot be made to do
in a test: require a password, proxy, or die mid-copy and come back."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import yaml

from fleet.devenv.pki import CertificateAuthority, new_ca
from fleet.devenv.processes import PortAllocator
from fleet.devenv.registry import REGISTRY_ENV, registry_config, write_registry_files
from fleet.devenv.toolchain import built_binary


@dataclass
class LocalRegistry:
    name: str
    root: Path
    port: int
    ca: Path
    config: dict
    env: dict[str, str]
    process: subprocess.Popen | None = None
    log: list[Path] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def blob_file(self, digest: str) -> Path:
        hex_ = digest.split(":", 1)[1]
        return self.data / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def start(self) -> None:
        log = self.root / "registry.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(built_binary("registry")), "serve", str(self.root / "config.yml")],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **REGISTRY_ENV, **self.env},
            )
        context = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"https://{self.host}/v2/", context=context, timeout=2)
                return
            except urllib.error.HTTPError:  # 401: up, asking for credentials
                return
            except OSError:
                assert self.process.poll() is None, log.read_text()[-2000:]
                time.sleep(0.1)
        raise AssertionError(f"registry {self.name} did not start: {log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


class Registries:
    """Starts registries under `root`, all signed by one CA; stops them all at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca: CertificateAuthority = new_ca("e2e test registries")
        self.ca_path = root / "ca.crt"
        root.mkdir(parents=True, exist_ok=True)
        self.ca_path.write_bytes(self.ca.cert_pem)
        self.ports = PortAllocator()
        self.started: list[LocalRegistry] = []

    def start(
        self,
        name: str,
        *,
        users: dict[str, str] | None = None,
        proxy_of: LocalRegistry | None = None,
    ) -> LocalRegistry:
        files = write_registry_files(name, self.root / name, self.ports.take(), self.ca)
        config = registry_config(files)
        # Upload sessions are signed with this: a fixed one lets them outlive a restart.
        config["http"]["secret"] = f"e2e-{name}"
        env = {}
        if users:
            lines = [
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}"
                for user, password in users.items()
            ]
            (files.root / "htpasswd").write_text("\n".join(lines) + "\n")
            config["auth"] = {"htpasswd": {"realm": name, "path": str(files.root / "htpasswd")}}
        if proxy_of is not None:
            config["proxy"] = {"remoteurl": f"https://{proxy_of.host}"}
            env["SSL_CERT_FILE"] = str(self.ca_path)  # Go reads the upstream's CA from here
        files.config.write_text(yaml.safe_dump(config, sort_keys=False))
        registry = LocalRegistry(name, files.root, files.port, self.ca_path, config, env)
        registry.start()
        self.started.append(registry)
        return registry

    def stop(self) -> None:
        for registry in self.started:
            registry.kill()


@contextlib.contextmanager
def running_registries(root: Path) -> Iterator[Registries]:
    made = Registries(root)
    try:
        yield made
    finally:
        made.stop()
