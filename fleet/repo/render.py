"""A fleet repository rendered into the Cluster API manifests it declares.

Each cluster's declaration goes through its blueprint (the same sandboxed Jinja2
renderer as add-on templates) into one ClusterClass-based `Cluster`; `fleet.yaml`'s
datacenters become fleet's `Datacenter` objects. Every problem is collected, with the
file and line to fix, rather than stopping at the first: validation is only useful if
one run shows everything. The output is a pure function of the repository's files,
written in a fixed key order, so a re-render is byte-identical and a diff shows only
what changed.

fleet owns some of the Cluster's metadata whatever the blueprint says: the fleet labels
(from `cluster_labels`, the one place they are derived), the managed-by label that
`fleet apply --prune` relies on to touch only what it made, the deletion-protection
label and the source annotation. They are stamped after rendering, so a blueprint can
neither forget nor forge them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleet.api import API_VERSION, CAPI_GROUP, GROUP
from fleet.api.declarations import (
    LABEL_DELETION_PROTECTION,
    ClusterDecl,
    DatacenterDecl,
    FleetDecl,
    Position,
    Problem,
    Repository,
    cluster_labels,
    dedupe,
    mig_config_name,
)
from fleet.render.templates import RenderError, parse_objects, render_text
from fleet.repo.blueprints import (
    Blueprint,
    UnknownBlueprint,
    check_pools,
    load_blueprint,
    resolve_inputs,
)
from fleet.repo.blueprints import (
    find_blueprint as find_blueprint,  # public here: where the CLI looks for it
)

JSON = dict[str, Any]

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "fleet-cli"
DELETION_PROTECTION_LABEL = LABEL_DELETION_PROTECTION
SOURCE_ANNOTATION = f"{GROUP}/source"
CLUSTER_API_VERSION = f"{CAPI_GROUP}/v1beta2"
# The key of `render_repository`'s result that holds fleet.yaml's objects; cluster
# names cannot start with "_", so it never collides with one.
DATACENTERS_KEY = "_datacenters"
DATACENTERS_FILE = "datacenters.yaml"
CA_SECRET_PREFIX = "fleet-datacenter-ca-"  # noqa: S105 (a Secret's name, no password)
CA_KEY = "ca.crt"
CLUSTERS_DIR = "clusters"


def cluster_context(cluster: ClusterDecl) -> JSON:
    """The declaration as the blueprint template sees it (`cluster`): plain data, the
    names as in the cluster's file."""
    return {
        "name": cluster.name,
        "datacenter": cluster.datacenter,
        "kubernetesVersion": cluster.kubernetes_version,
        "controlPlane": {
            "replicas": cluster.control_plane.replicas,
            "size": cluster.control_plane.size,
        },
        "gpuPools": [
            {
                "name": pool.name,
                "product": pool.product,
                "nodes": pool.nodes,
                "gpusPerNode": pool.gpus_per_node,
                "migProfile": pool.mig_profile,
                # The mig-manager's node label value (`all-1g.10gb`, `all-balanced`).
                "migConfig": mig_config_name(pool.mig_profile) if pool.mig_profile else "",
                "timeSlicingReplicas": pool.time_slicing_replicas,
            }
            for pool in cluster.gpu_pools
        ],
        "cpuPools": [
            {"name": pool.name, "nodes": pool.nodes, "size": pool.size}
            for pool in cluster.cpu_pools
        ],
        "canary": cluster.canary,
        "models": list(cluster.models),
    }


def source_file(cluster: ClusterDecl) -> str:
    return cluster.file or f"{CLUSTERS_DIR}/{cluster.name}.yaml"


@dataclass(frozen=True, slots=True)
class _Failure:
    """A template that failed: one problem however many clusters it failed for."""

    file: str
    line: int
    message: str


def _stamp(cluster: ClusterDecl, rendered: JSON) -> JSON:
    """The rendered Cluster with the metadata fleet owns set as the declaration says."""
    meta = rendered["metadata"]
    labels = dict(meta.get("labels") or {})
    labels |= cluster_labels(cluster)
    labels[MANAGED_BY_LABEL] = MANAGED_BY_VALUE
    if cluster.deletion_protection:
        labels[DELETION_PROTECTION_LABEL] = "true"
    meta["labels"] = labels
    meta["annotations"] = dict(meta.get("annotations") or {}) | {
        SOURCE_ANNOTATION: source_file(cluster)
    }
    return rendered


def render_cluster(
    cluster: ClusterDecl, blueprint: Blueprint, inputs: JSON, namespace: str
) -> JSON:
    """The Cluster a declaration asks for; raises RenderError naming the template's file
    and line when the blueprint cannot make one."""
    variables = {
        "cluster": cluster_context(cluster),
        "inputs": inputs,
        "labels": cluster_labels(cluster),
        "namespace": namespace,
        "blueprint": {"name": blueprint.name, "class": blueprint.cluster_class},
    }
    name = blueprint.template_file
    text = render_text(blueprint.name, name, blueprint.template, variables)
    objects = parse_objects(blueprint.name, name, text)
    if len(objects) != 1 or objects[0]["kind"] != "Cluster":
        made = ", ".join(f"{o['kind']} {o['metadata']['name']}" for o in objects) or "nothing"
        raise RenderError(blueprint.name, name, None, f"must render one Cluster, made {made}")
    found = objects[0]
    meta = found["metadata"]
    wrong = [
        f"{field} {got!r} (expected {want!r})"
        for field, got, want in (
            ("apiVersion", found["apiVersion"], CLUSTER_API_VERSION),
            ("metadata.name", meta.get("name"), cluster.name),
            ("metadata.namespace", meta.get("namespace"), namespace),
        )
        if got != want
    ]
    if wrong:
        raise RenderError(blueprint.name, name, None, f"rendered {', '.join(wrong)}")
    return _stamp(cluster, found)


class _Blueprints:
    """Each blueprint found and loaded once per render, its problems reported once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loaded: dict[str, Blueprint | None] = {}
        self.problems: list[Problem] = []

    def get(self, cluster: ClusterDecl) -> Blueprint | UnknownBlueprint | None:
        name = cluster.blueprint
        if name not in self.loaded:
            try:
                directory = find_blueprint(self.root, name)
            except UnknownBlueprint as error:
                return error
            self.loaded[name], problems = load_blueprint(directory, self.root)
            self.problems.extend(problems)
        return self.loaded[name]


def _unknown(cluster: ClusterDecl, error: UnknownBlueprint) -> Problem:
    close = difflib.get_close_matches(error.name, error.known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    known = ", ".join(error.known) if error.known else "none"
    return cluster.problem("blueprint", f"unknown blueprint {error.name!r}{hint} (known: {known})")


def render_repository(repository: Repository) -> tuple[dict[str, list[JSON]], list[Problem]]:
    """fleet.yaml's objects under DATACENTERS_KEY, then every cluster's by cluster name
    (sorted), and every problem found on the way. A cluster with a problem is left
    out. Reads the blueprints and the datacenters' CA files; nothing else."""
    root, namespace = repository.root, repository.fleet.namespace
    blueprints = _Blueprints(root)
    problems: list[Problem] = []
    failures: dict[_Failure, list[str]] = {}
    rendered: dict[str, list[JSON]] = {}
    for cluster in sorted(repository.clusters, key=lambda c: c.name):
        blueprint = blueprints.get(cluster)
        if isinstance(blueprint, UnknownBlueprint):
            problems.append(_unknown(cluster, blueprint))
            continue
        if blueprint is None:
            continue
        inputs, found = resolve_inputs(blueprint, cluster)
        found += check_pools(blueprint, cluster)
        if found:
            problems.extend(found)
            continue
        try:
            rendered[cluster.name] = [render_cluster(cluster, blueprint, inputs, namespace)]
        except RenderError as error:
            failure = _Failure(error.template, error.line or 1, error.problem)
            failures.setdefault(failure, []).append(cluster.name)
    for failure, names in failures.items():
        problems.append(
            Problem(
                Position(failure.file, failure.line, 1),
                "template",
                f"{failure.message} (rendering {_some(names)})",
            )
        )
    datacenters, found = datacenter_objects(repository.fleet, root)
    problems += blueprints.problems + found
    # Datacenters first: iterating the result gives the objects in an order they can
    # be applied in (the CA Secrets, the Datacenters, then the Clusters).
    return {DATACENTERS_KEY: datacenters, **rendered}, dedupe(problems)


def _some(names: list[str], shown: int = 3) -> str:
    listed = ", ".join(names[:shown])
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"cluster{'s' if len(names) > 1 else ''} {listed}{more}"


def _ca_certificate(datacenter: DatacenterDecl, root: Path) -> tuple[str | None, Problem | None]:
    """The PEM text of a datacenter's registry CA. Only certificates: the Secret made
    from it is written out in plain text."""
    field = f"datacenters.{datacenter.name}.registry.caFile"

    def refused(message: str) -> tuple[None, Problem]:
        return None, Problem(datacenter.position, field, message)

    # Relative to the repository root, or absolute (as fleet.yaml allows).
    path = root / datacenter.registry.ca_file
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        return refused(f"cannot be read: {error}")
    if "PRIVATE KEY" in text:
        return refused(
            f"{datacenter.registry.ca_file} holds a private key: it must hold only the "
            "CA certificate(s), which are written out in plain text"
        )
    if "-----BEGIN CERTIFICATE-----" not in text:
        return refused(f"{datacenter.registry.ca_file} holds no PEM certificate")
    return text, None


def datacenter_objects(fleet: FleetDecl, root: Path) -> tuple[list[JSON], list[Problem]]:
    """fleet.yaml's datacenters as fleet's Datacenter objects, with a Secret holding each
    registry CA before them (Secrets are applied first), in name order."""
    secrets: list[JSON] = []
    datacenters: list[JSON] = []
    problems: list[Problem] = []
    managed = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    for datacenter in sorted(fleet.datacenters, key=lambda d: d.name):
        registry: JSON = {
            "url": datacenter.registry.url,
            "pullThrough": datacenter.registry.pull_through,
        }
        if datacenter.registry.ca_file:
            certificate, problem = _ca_certificate(datacenter, root)
            if problem is not None:
                problems.append(problem)
                continue
            secret = f"{CA_SECRET_PREFIX}{datacenter.name}"
            secrets.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": secret,
                        "namespace": fleet.namespace,
                        "labels": dict(managed),
                    },
                    "type": "Opaque",
                    "stringData": {CA_KEY: certificate},
                }
            )
            registry["caSecretRef"] = {"name": secret, "namespace": fleet.namespace}
        spec: JSON = {"region": datacenter.region, "registry": registry}
        if datacenter.prometheus_url:
            spec["prometheus"] = {"remoteWriteURL": datacenter.prometheus_url}
        datacenters.append(
            {
                "apiVersion": API_VERSION,
                "kind": "Datacenter",
                "metadata": {"name": datacenter.name, "labels": dict(managed)},
                "spec": spec,
            }
        )
    return secrets + datacenters, problems


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Safe YAML, multi-line strings (CA certificates) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(objects: list[JSON]) -> str:
    """Objects as one YAML stream, keys in the order they were built (apiVersion, kind,
    metadata, spec): the same objects give the same bytes."""
    return yaml.dump_all(
        objects, Dumper=_Dumper, sort_keys=False, explicit_start=True, default_flow_style=False
    )


def manifest_files(rendered: dict[str, list[JSON]]) -> dict[str, str]:
    """File name (relative to the output folder) → YAML text: `datacenters.yaml` first
    when there are datacenters, then `clusters/<name>.yaml` by name."""
    files: dict[str, str] = {}
    if rendered.get(DATACENTERS_KEY):
        files[DATACENTERS_FILE] = to_yaml(rendered[DATACENTERS_KEY])
    for name in sorted(n for n in rendered if n != DATACENTERS_KEY):
        files[f"{CLUSTERS_DIR}/{name}.yaml"] = to_yaml(rendered[name])
    return files
