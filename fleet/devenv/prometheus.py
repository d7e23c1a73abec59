"""One Prometheus per datacenter (Debian's package), served over TLS.

It is what a datacenter's `spec.prometheus` points at: its remote-write receiver
takes the clusters' agents' samples, and it scrapes the fleet controller's
/metrics whenever a controller of the local fleet runs (the harness writes the
controller's address into a file_sd target file that Prometheus re-reads).
The serving certificate comes from the local fleet's services CA, as the
registries' do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleet.devenv.pki import CertificateAuthority

TARGETS_FILE = "controller-targets.json"
SCRAPE_SECONDS = 5


@dataclass(frozen=True, slots=True)
class PrometheusFiles:
    datacenter: str
    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def remote_write_url(self) -> str:
        return f"{self.url}/api/v1/write"

    @property
    def config(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def web_config(self) -> Path:
        return self.root / "web.yml"


def prometheus_config(datacenter: str, targets: Path) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": f"{SCRAPE_SECONDS}s",
            "external_labels": {"datacenter": datacenter},
        },
        "scrape_configs": [
            {
                "job_name": "fleet-controller",
                "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "5s"}],
            }
        ],
    }


def write_prometheus_files(
    datacenter: str, root: Path, port: int, ca: CertificateAuthority, targets: Path
) -> PrometheusFiles:
    files = PrometheusFiles(datacenter=datacenter, root=root, port=port)
    ca.issue(f"prometheus.{datacenter}", hosts=("127.0.0.1", "localhost"), server=True).write(
        root, "tls"
    )
    (root / "data").mkdir(parents=True, exist_ok=True)
    files.config.write_text(yaml.safe_dump(prometheus_config(datacenter, targets)))
    web = {
        "tls_server_config": {"cert_file": str(root / "tls.crt"), "key_file": str(root / "tls.key")}
    }
    files.web_config.write_text(yaml.safe_dump(web))
    if not targets.exists():
        write_targets(targets, [])
    return files


def prometheus_command(binary: Path, files: PrometheusFiles) -> list[str]:
    return [
        str(binary),
        f"--config.file={files.config}",
        f"--web.config.file={files.web_config}",
        f"--web.listen-address=127.0.0.1:{files.port}",
        f"--storage.tsdb.path={files.root / 'data'}",
        "--storage.tsdb.retention.time=1d",
        "--web.enable-remote-write-receiver",
        "--log.level=warn",
    ]


def write_targets(targets: Path, addresses: list[str]) -> None:
    """The controllers Prometheus scrapes (host:port of their /metrics); written whole and
    renamed into place, so Prometheus never reads half a file."""
    entries = (
        [{"targets": addresses, "labels": {"component": "fleet-controller"}}] if addresses else []
    )
    partial = targets.with_suffix(".tmp")
    partial.write_text(json.dumps(entries))
    partial.replace(targets)
