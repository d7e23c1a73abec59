"""Render Helm add-ons with `helm template`, charts pulled from OCI registries.

A chart version is pulled once into a cache folder and rendered from there.
The registry is verified against the CA of the Datacenter that serves it
(`spec.registry.caSecretRef`); plain HTTP only when that Datacenter marks its
registry `insecure`. Nothing is installed with Helm: fleet applies the
rendered objects itself (server-side apply, pruning, drift), so there are no
Helm release Secrets and no releases stuck in pending-install.
"""

from __future__ import annotations

import base64
import copy
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleet.api.models import Addon, ChartSource
from fleet.errors import PermanentError, TemporaryError
from fleet.hashing import digest
from fleet.render.templates import LOADER, Capabilities

JSON = dict[str, Any]
HELM_TIMEOUT = 120
# Rendered charts kept in memory (oldest dropped first): a fleet has few distinct inputs.
RENDERED_KEPT = 256
TEST_HOOKS = ("test", "test-success", "test-failure")


class HelmError(PermanentError):
    pass


class ChartRendering(TemporaryError):
    """`helm template` runs in the background; the deployment is queued again when it ends."""


@dataclass(frozen=True, slots=True)
class RegistryAccess:
    """How to reach the registry serving a chart: its CA (PEM), or plain HTTP."""

    ca_pem: str = ""
    plain_http: bool = False


def serving_registry(repository: str, datacenters: Iterable[JSON]) -> JSON | None:
    """The `spec.registry` of the Datacenter whose registry serves an OCI repository."""
    host = repository.removeprefix("oci://").split("/", 1)[0]
    for datacenter in datacenters:
        registry = (datacenter.get("spec") or {}).get("registry") or {}
        if str(registry.get("url", "")).removeprefix("https://").rstrip("/") == host:
            return dict(registry)
    return None


class HelmRenderer:
    def __init__(self, helm: str, cache: Path | None = None) -> None:
        self.helm = helm
        self._rendered: dict[str, list[JSON]] = {}
        self.cache = cache or Path(tempfile.mkdtemp(prefix="fleet-charts-"))
        self._lock = threading.Lock()

    def _run(self, arguments: list[str], what: str) -> str:
        try:
            result = subprocess.run(
                [self.helm, *arguments],
                capture_output=True,
                text=True,
                timeout=HELM_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise TemporaryError(f"{what}: helm took over {HELM_TIMEOUT}s", delay=30) from error
        if result.returncode != 0:
            raise HelmError(f"{what}: {result.stderr.strip().splitlines()[-1][:300]}")
        return result.stdout

    def _access_flags(self, access: RegistryAccess) -> list[str]:
        if access.plain_http:
            return ["--plain-http"]
        if access.ca_pem:
            ca = self.cache / f"ca-{abs(hash(access.ca_pem))}.crt"
            if not ca.exists():
                ca.write_text(access.ca_pem)
            return ["--ca-file", str(ca)]
        return []

    def chart(self, chart: ChartSource, access: RegistryAccess) -> Path:
        """The chart archive, pulled on first use."""
        folder = (
            self.cache
            / base64.urlsafe_b64encode(f"{chart.repository}/{chart.name}".encode()).decode()
            / chart.version
        )
        with self._lock:
            archives = list(folder.glob("*.tgz")) if folder.exists() else []
            if archives:
                return archives[0]
            folder.mkdir(parents=True, exist_ok=True)
            self._run(
                [
                    "pull",
                    f"{chart.repository.rstrip('/')}/{chart.name}",
                    "--version",
                    chart.version,
                    "--destination",
                    str(folder),
                    *self._access_flags(access),
                ],
                f"pulling chart {chart.name} {chart.version} from {chart.repository}",
            )
            archives = list(folder.glob("*.tgz"))
        if not archives:
            raise HelmError(f"helm pull of {chart.name} {chart.version} produced no archive")
        return archives[0]

    @staticmethod
    def key(addon: Addon, values: JSON, capabilities: Capabilities) -> str:
        """What one `helm template` run depends on: equal keys render equal objects."""
        chart = addon.require_chart()
        return digest(
            [
                addon.name,
                addon.default_namespace,
                chart.repository,
                chart.name,
                chart.version,
                values,
                capabilities.kube_version,
                capabilities.api_versions,
            ]
        )

    def rendered(self, addon: Addon, values: JSON, capabilities: Capabilities) -> list[JSON] | None:
        """The chart's objects when this input was rendered before, else None."""
        with self._lock:
            cached = self._rendered.get(self.key(addon, values, capabilities))
        return None if cached is None else copy.deepcopy(cached)

    def template(
        self, addon: Addon, values: JSON, capabilities: Capabilities, access: RegistryAccess
    ) -> list[JSON]:
        """The chart's objects; `helm template` runs once per distinct input, not per cluster."""
        cached = self.rendered(addon, values, capabilities)
        if cached is not None:
            return cached
        objects = self._template(addon, values, capabilities, access)
        with self._lock:
            self._rendered[self.key(addon, values, capabilities)] = objects
            while len(self._rendered) > RENDERED_KEPT:
                self._rendered.pop(next(iter(self._rendered)))
        return copy.deepcopy(objects)

    def _template(
        self, addon: Addon, values: JSON, capabilities: Capabilities, access: RegistryAccess
    ) -> list[JSON]:
        archive = self.chart(addon.require_chart(), access)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=self.cache) as values_file:
            yaml.safe_dump(values, values_file)
            values_file.flush()
            arguments = [
                "template",
                addon.name,
                str(archive),
                "--namespace",
                addon.default_namespace,
                "--include-crds",
                "--skip-tests",
                "-f",
                values_file.name,
            ]
            if capabilities.kube_version:
                arguments += ["--kube-version", capabilities.kube_version]
            for api_version in capabilities.api_versions:
                arguments += ["--api-versions", api_version]
            rendered = self._run(arguments, f"add-on {addon.name}: helm template")
        return [
            doc
            for doc in yaml.load_all(rendered, Loader=LOADER)
            if isinstance(doc, dict) and not is_skipped_hook(doc)
        ]


# Helm hooks that run at times fleet has no equivalent of: applied as ordinary objects
# they would run at once (a pre-delete clean-up Job on install).
NEVER_APPLIED_HOOKS = frozenset(
    {
        "test",
        "test-success",
        "test-failure",
        "pre-delete",
        "post-delete",
        "pre-rollback",
        "post-rollback",
    }
)


def is_skipped_hook(body: JSON) -> bool:
    """A chart's test, delete or rollback hook: never applied to a cluster (helm template
    --skip-tests drops only the tests under templates/tests/). Install and upgrade hooks
    are applied with the rest, as Argo CD applies them as sync hooks."""
    hooks = ((body.get("metadata") or {}).get("annotations") or {}).get("helm.sh/hook", "")
    return any(hook.strip() in NEVER_APPLIED_HOOKS for hook in hooks.split(","))
