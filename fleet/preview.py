"""What one cluster would get from an add-on, computed the way the controller computes it.

`fleet render` and `fleet diff` read the declarations from the management
cluster (Cluster, Addon, AddonProfile, Datacenter, the kubeconfig Secret),
the nodes of the workload cluster (for `gpu`), render with the controller's
renderer and prepare the objects with the controller's ApplySet labels: the
objects printed are the objects applied.
"""

from __future__ import annotations

import base64
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.api import GROUP, LABEL_CLUSTER, VERSION, deployment_name
from fleet.api.models import (
    Addon,
    Cluster,
    parse_addon,
    parse_cluster,
    parse_datacenter,
    parse_profile,
)
from fleet.apply import addon_on_cluster
from fleet.connections.client import ClusterClient
from fleet.connections.kubeconfig import parse_kubeconfig
from fleet.errors import PermanentError
from fleet.render.helm import HelmRenderer, RegistryAccess, serving_registry
from fleet.render.templates import (
    Capabilities,
    ChartTemplater,
    RenderContext,
    gpu_inventory,
    kubelet_version,
    render_addon,
)
from fleet.sources import ReadError
from fleet.sources.management import cluster as get_cluster
from fleet.sources.management import collection
from fleet.sources.reader import Reader

JSON = dict[str, Any]


class PreviewError(PermanentError):
    """What a preview needs is missing or ambiguous; the message says what to pass."""


@dataclass(frozen=True, slots=True)
class Target:
    """One cluster as the controller sees it: declarations, connection, GPU facts."""

    cluster: Cluster
    context: RenderContext
    client: ClusterClient
    # profile name -> its AddonDeployment's name on this cluster
    deployments: dict[str, str]


def _get(reader: Reader, path: str, what: str) -> JSON:
    found = reader.get(path).body
    if found is None:
        raise ReadError(f"{what} not found")
    return found


def _named(group: str, version: str, plural: str, namespace: str, name: str) -> str:
    return f"{collection(group, version, plural, namespace)}/{urllib.parse.quote(name, safe='')}"


def _secret(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets/{urllib.parse.quote(name, safe='')}"


def read_target(reader: Reader, namespace: str, name: str) -> Target:
    cluster = parse_cluster(get_cluster(reader, namespace, name))
    datacenter = None
    if cluster.datacenter:
        found = reader.get(_named(GROUP, VERSION, "datacenters", "", cluster.datacenter)).body
        datacenter = parse_datacenter(found) if found else None
    secret = _get(
        reader,
        _secret(namespace, f"{name}-kubeconfig"),
        f"kubeconfig Secret {namespace}/{name}-kubeconfig",
    )
    text = base64.b64decode((secret.get("data") or {}).get("value", "")).decode()
    client = ClusterClient(name, parse_kubeconfig(name, text))
    nodes = list(client.list(client.resource("v1", "Node")))
    deployments = reader.list(
        collection(GROUP, VERSION, "addondeployments", namespace), f"{LABEL_CLUSTER}={name}"
    )
    capabilities = Capabilities(kubelet_version(nodes), client.api_versions())
    return Target(
        cluster,
        RenderContext(cluster, datacenter, gpu_inventory(nodes), capabilities),
        client,
        {d["spec"]["profile"]: d["metadata"]["name"] for d in deployments or []},
    )


def read_addon(reader: Reader, namespace: str, name: str) -> Addon:
    return parse_addon(
        _get(reader, _named(GROUP, VERSION, "addons", namespace, name), f"Addon {namespace}/{name}")
    )


def profile_values(
    reader: Reader, namespace: str, target: Target, addon: str, profile: str | None
) -> tuple[str, JSON]:
    """(profile, values) of the add-on on this cluster: from `profile`, or from the one profile
    on the cluster that lists the add-on."""
    names = [profile] if profile else sorted(target.deployments)
    found = []
    for name in names:
        body = _get(
            reader,
            _named(GROUP, VERSION, "addonprofiles", namespace, name),
            f"AddonProfile {namespace}/{name}",
        )
        entries = {e.name: e.values for e in parse_profile(body).addons}
        if addon in entries:
            found.append((name, entries[addon]))
    if not found:
        where = f"profile {profile}" if profile else f"any profile on cluster {target.cluster.name}"
        raise PreviewError(f"add-on {addon} is not in {where}: pass --profile")
    if len(found) > 1:
        listed = ", ".join(name for name, _ in found)
        raise PreviewError(f"add-on {addon} is in several profiles ({listed}): pass --profile")
    return found[0]


def _access(reader: Reader, repository: str, datacenters: list[JSON]) -> RegistryAccess:
    registry = serving_registry(repository, datacenters) or {}
    if registry.get("insecure"):
        return RegistryAccess(plain_http=True)
    reference = registry.get("caSecretRef")
    if not reference:
        return RegistryAccess()
    secret = _get(reader, _secret(reference["namespace"], reference["name"]), "registry CA Secret")
    ca = (secret.get("data") or {}).get("ca.crt", "")
    return RegistryAccess(ca_pem=base64.b64decode(ca).decode())


class Charts:
    """Helm add-ons rendered with the local helm for one command: each chart pulled once
    into `cache`, verified as the controller verifies it (the CA of the Datacenter whose
    registry serves it), the Datacenters and their CAs read once."""

    def __init__(self, reader: Reader, helm: str | None, cache: Path) -> None:
        binary = helm or shutil.which("helm")
        self._renderer = HelmRenderer(binary, cache) if binary else None
        self._reader = reader
        self._datacenters: list[JSON] | None = None
        self._access: dict[str, RegistryAccess] = {}

    def templater(self, capabilities: Capabilities) -> ChartTemplater:
        """The chart renderer for a cluster with these capabilities."""

        def template(addon: Addon, values: JSON) -> list[JSON]:
            if self._renderer is None:
                raise PreviewError(
                    f"add-on {addon.name} is a helm chart: pass --helm or put helm on PATH"
                )
            access = self._registry_access(addon.require_chart().repository)
            return self._renderer.template(addon, values, capabilities, access)

        return template

    def _registry_access(self, repository: str) -> RegistryAccess:
        if repository not in self._access:
            if self._datacenters is None:
                found = self._reader.list(collection(GROUP, VERSION, "datacenters", None))
                self._datacenters = found or []
            self._access[repository] = _access(self._reader, repository, self._datacenters)
        return self._access[repository]


def rendered(
    target: Target, addon: Addon, values: JSON, profile: str, charts: Charts
) -> list[JSON]:
    """The add-on's objects for this cluster, labelled and namespaced as the controller applies
    them."""
    objects = render_addon(
        addon, values, target.context, charts.templater(target.context.capabilities)
    )
    cluster = target.cluster
    deployment = target.deployments.get(profile) or deployment_name(profile, cluster.name)
    on_cluster = addon_on_cluster(target.client, cluster.namespace, deployment, profile, addon.name)
    return on_cluster.prepare(objects, addon.default_namespace)
