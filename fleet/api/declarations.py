"""The clusters a platform team declares in git, as typed data, with every mistake located.

A fleet repository holds `fleet.yaml` (the datacenters, and defaults for every
cluster) and one short `clusters/<name>.yaml` per cluster; `addons/`, `profiles/`
and `models/` hold fleet's own objects, published as they are. This module turns
the text of those files into frozen dataclasses, and every mistake into a
`Problem` that points at the file, line and column of the node at fault, so a
review can fix them all in one go instead of one per run.

Pure: texts go in, declarations and problems come out (`parse_declarations`);
reading the directory and the cross-checks between files live in `fleet.repo`.
Parsing goes on after a mistake: a field that fails keeps a harmless stand-in
(its default; `deletionProtection` falls back to true) and the rest of the file,
and the other files, are still read. A repository with problems is for reporting
only, never for applying.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from fleet.api import (
    API_VERSION,
    GROUP,
    LABEL_CANARY,
    LABEL_DATACENTER,
    LABEL_GPU_COUNT,
    LABEL_GPU_PRODUCT,
    LABEL_MIG_CAPABLE,
    LABEL_MIG_PROFILE,
    LABEL_TIME_SLICING_REPLICAS,
)
from fleet.errors import PermanentError
from fleet.gpu import MAX_REPLICAS, mig_geometry

# The repository's layout.
FLEET_FILE = "fleet.yaml"
CLUSTERS_DIR = "clusters"
MANIFEST_DIRS = ("addons", "profiles", "models")
FLEET_KIND = "Fleet"
MANIFEST_KINDS = ("Addon", "AddonProfile", "ModelArtifact")

# On a Cluster whose declaration says so: `fleet apply --prune` never deletes it.
LABEL_DELETION_PROTECTION = f"{GROUP}/deletion-protection"

CONTROL_PLANE_REPLICAS = (1, 3, 5)
SIZES = ("small", "medium", "large")
MAX_POOL_NODES = 1000
MAX_GPUS_PER_NODE = 16
DEFAULT_NAMESPACE = "fleet-clusters"

# The one place cluster defaults come from: these, overlaid by `defaults:` in
# fleet.yaml, overlaid by the cluster's own file. Mappings merge key by key;
# lists and scalars are replaced whole.
BUILTIN_DEFAULTS: Mapping[str, Any] = {
    "controlPlane": {"replicas": 1, "size": "small"},
    "gpuPools": [],
    "cpuPools": [],
    "labels": {},
    "canary": False,
    "models": [],
    "values": {},
    "deletionProtection": False,
}
REQUIRED_CLUSTER_FIELDS = ("name", "datacenter", "blueprint", "kubernetesVersion")
CLUSTER_FIELDS = (*REQUIRED_CLUSTER_FIELDS, *BUILTIN_DEFAULTS)
GPU_POOL_FIELDS = ("name", "product", "nodes", "gpusPerNode", "migProfile", "timeSlicingReplicas")
CPU_POOL_FIELDS = ("name", "nodes", "size")
FLEET_FIELDS = ("apiVersion", "kind", "namespace", "datacenters", "defaults")
DATACENTER_FIELDS = ("name", "region", "registry", "prometheus")
REGISTRY_FIELDS = ("url", "caFile", "pullThrough")
PROMETHEUS_FIELDS = ("remoteWriteURL",)

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_VERSION = re.compile(r"v\d+\.\d+\.\d+")
_MIG_PROFILE = re.compile(r"(all-)?(balanced|\d+g\.\d+gb)")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

_TIMESTAMP = "tag:yaml.org,2002:timestamp"
# libyaml when it is there: the same nodes and marks, several times faster.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --- Where, and what is wrong ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a repository file: the path relative to the repository root, 1-based
    line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake: where, which field (a path such as `gpuPools[0].nodes`; empty for
    the file as a whole, e.g. a YAML syntax error), and what is allowed instead."""

    position: Position
    field: str
    message: str

    def __str__(self) -> str:
        if not self.field:
            return f"{self.position}: {self.message}"
        return f"{self.position}: {self.field}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.position.file,
            "line": self.position.line,
            "column": self.position.column,
            "field": self.field,
            "message": self.message,
        }


class DeclarationErrors(PermanentError):
    """A repository that cannot be used as written; `problems` holds every mistake."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


# --- What is declared -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistryDecl:
    url: str
    # A path relative to the repository root (or absolute); "" for the system's CAs.
    ca_file: str = ""
    pull_through: bool = False


@dataclass(frozen=True, slots=True)
class DatacenterDecl:
    name: str
    region: str
    registry: RegistryDecl
    prometheus_url: str = ""
    position: Position = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class ControlPlane:
    replicas: int = 1
    size: str = "small"


@dataclass(frozen=True, slots=True)
class GPUPool:
    name: str
    product: str
    nodes: int
    gpus_per_node: int = 8
    # As written: `1g.10gb`, `balanced` (or with mig-parted's `all-` prefix); "" for none.
    mig_profile: str = ""
    time_slicing_replicas: int = 0


@dataclass(frozen=True, slots=True)
class CPUPool:
    name: str
    nodes: int
    size: str = "medium"


@dataclass(frozen=True, slots=True)
class ClusterDecl:
    name: str
    datacenter: str
    blueprint: str
    kubernetes_version: str
    control_plane: ControlPlane
    gpu_pools: tuple[GPUPool, ...]
    cpu_pools: tuple[CPUPool, ...]
    labels: Mapping[str, str]
    canary: bool
    models: tuple[str, ...]
    values: Mapping[str, Any]
    deletion_protection: bool
    file: str
    # Field path (`name`, `gpuPools[0].migProfile`, `values.podCIDR`, `labels["a.b/c"]`)
    # -> where it is written (a scalar's value; a mapping's or list's key): in the
    # cluster file, or in fleet.yaml for a value taken from its `defaults`; the cluster
    # file's 1:1 for a built-in default. Every top-level field has an entry.
    positions: Mapping[str, Position]

    @property
    def gpu_count(self) -> int:
        return sum(pool.nodes * pool.gpus_per_node for pool in self.gpu_pools)

    @property
    def gpu_product(self) -> str:
        return self.gpu_pools[0].product if self.gpu_pools else ""

    def position(self, path: str) -> Position:
        """Where `path` is written, else its nearest written parent, else the file's 1:1."""
        while path:
            if path in self.positions:
                return self.positions[path]
            path = _parent(path)
        return Position(self.file, 1, 1)

    def problem(self, path: str, message: str) -> Problem:
        """A problem about one of this cluster's fields, located where the value is
        written (a value taken from fleet.yaml's defaults is named `defaults.<path>`)."""
        position = self.position(path)
        return Problem(position, _field_name(path, position, self.file), message)


@dataclass(frozen=True, slots=True)
class FleetDecl:
    namespace: str
    datacenters: tuple[DatacenterDecl, ...]
    # fleet.yaml's `defaults:`, as written (environment references expanded).
    defaults: Mapping[str, Any]
    file: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """One document of addons/, profiles/ or models/: published as it is."""

    position: Position
    body: Mapping[str, Any]
    # Field path (`spec.clusterSelector`, `spec.addons[0].name`) -> where it is written.
    positions: Mapping[str, Position] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name", ""))

    def at(self, path: str) -> Position:
        """Where `path` is written, else its nearest written parent, else the document."""
        while path:
            if path in self.positions:
                return self.positions[path]
            path = _parent(path)
        return self.position


@dataclass(frozen=True, slots=True)
class Repository:
    """A fleet repository as read: its root directory, fleet.yaml, the clusters sorted
    by name, and the manifests of addons/, profiles/ and models/ in path order."""

    root: Path
    fleet: FleetDecl
    clusters: tuple[ClusterDecl, ...]
    manifests: tuple[Manifest, ...]


def mig_config_name(profile: str) -> str:
    """The mig-parted configuration (and label value) for a declared MIG profile:
    `1g.10gb` -> `all-1g.10gb`."""
    return profile if profile.startswith("all-") else f"all-{profile}"


def cluster_labels(cluster: ClusterDecl) -> dict[str, str]:
    """The labels the Cluster carries: the declared ones, and fleet's own, which
    profiles and add-on templates select on (see the README's table); sorted by key."""
    labels = dict(cluster.labels)
    labels[LABEL_DATACENTER] = cluster.datacenter
    if cluster.gpu_pools:
        labels[LABEL_GPU_PRODUCT] = cluster.gpu_product
        labels[LABEL_GPU_COUNT] = str(cluster.gpu_count)
        labels[LABEL_MIG_CAPABLE] = str(mig_geometry(cluster.gpu_product) is not None).lower()
        # check_repository holds every pool of a cluster to one sharing declaration.
        mig = next((pool.mig_profile for pool in cluster.gpu_pools if pool.mig_profile), "")
        if mig:
            labels[LABEL_MIG_PROFILE] = mig_config_name(mig)
        replicas = next(
            (p.time_slicing_replicas for p in cluster.gpu_pools if p.time_slicing_replicas), 0
        )
        if replicas:
            labels[LABEL_TIME_SLICING_REPLICAS] = str(replicas)
    if cluster.canary:
        labels[LABEL_CANARY] = "true"
    if cluster.deletion_protection:
        labels[LABEL_DELETION_PROTECTION] = "true"
    return dict(sorted(labels.items()))


def is_fleet_label(key: str) -> bool:
    """Whether a label key is fleet's own (`fleet.mlops.dev/…`, `*.fleet.mlops.dev/…`)."""
    prefix = key.partition("/")[0] if "/" in key else ""
    return prefix == GROUP or prefix.endswith(f".{GROUP}")


# --- YAML with positions --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    """A YAML value with where it is written. `value` is a scalar, a dict of _Node by
    key, or a list of _Node; `key_at` is where its key is, for a mapping's values."""

    value: Any
    at: Position
    key_at: Position | None = None


def _position(file: str, mark: Any) -> Position:
    return Position(file, mark.line + 1, mark.column + 1)


def _child(path: str, key: str) -> str:
    if not _PLAIN_KEY.fullmatch(key):
        return f"{path}[{json.dumps(key)}]"
    return f"{path}.{key}" if path else key


def _parent(path: str) -> str:
    if path.endswith('"]'):
        return path[: path.rindex('["')]
    if path.endswith("]"):
        return path[: path.rindex("[")]
    return path.rpartition(".")[0]


def _field_name(path: str, position: Position, home: str) -> str:
    """A field's name in a problem: a value fleet.yaml's defaults gave a cluster is
    `defaults.<path>`, so the name matches the file the position points into."""
    if position.file == FLEET_FILE and home != FLEET_FILE and path:
        return f"defaults.{path}"
    return path


def _documents(text: str, file: str, problems: list[Problem]) -> list[_Node | None] | None:
    """The documents of a YAML file (None for an empty document); None for the file when
    it has a syntax error, reported once at the error's mark."""
    constructor = SafeConstructor()
    documents: list[_Node | None] = []
    try:
        for root in yaml.compose_all(text, Loader=_LOADER):
            node = _convert(root, file, constructor, problems, frozenset())
            documents.append(None if node.value is None else node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        message = error.problem or "YAML syntax error"
        if error.context:
            message = f"{message} ({error.context})"
        at = _position(file, mark) if mark is not None else Position(file, 1, 1)
        problems.append(Problem(at, "", f"YAML syntax error: {message}"))
        return None
    except yaml.YAMLError as error:
        problems.append(Problem(Position(file, 1, 1), "", f"YAML error: {error}"))
        return None
    return documents


def _single(text: str, file: str, what: str, problems: list[Problem]) -> _Node | None:
    """The one document of a file; None when there is none to read (reported)."""
    documents = _documents(text, file, problems)
    if documents is None:
        return None
    if not documents or documents[0] is None:
        problems.append(Problem(Position(file, 1, 1), "", f"empty file: declare {what}"))
        return None
    for extra in documents[1:]:
        at = extra.at if extra is not None else Position(file, 1, 1)
        problems.append(Problem(at, "", f"a second document: the file holds {what} only"))
    return documents[0]


def _convert(
    node: yaml.Node,
    file: str,
    constructor: SafeConstructor,
    problems: list[Problem],
    parents: frozenset[int],
) -> _Node:
    at = _position(file, node.start_mark)
    if id(node) in parents:
        problems.append(Problem(at, "", "a YAML alias refers to a node that contains it"))
        return _Node(None, at)
    inside = parents | {id(node)}
    if isinstance(node, yaml.MappingNode):
        try:
            constructor.flatten_mapping(node)
        except ConstructorError as error:
            problems.append(Problem(at, "", f"YAML merge key: {error.problem}"))
        items: dict[str, _Node] = {}
        for key_node, value_node in node.value:
            key_at = _position(file, key_node.start_mark)
            key = _scalar(key_node, key_at, constructor, problems)
            if not isinstance(key, str):
                problems.append(Problem(key_at, "", f"keys must be strings, got {_describe(key)}"))
                continue
            if key in items:
                first = items[key].key_at or at
                problems.append(
                    Problem(
                        key_at, "", f"duplicate key {json.dumps(key)} (first at line {first.line})"
                    )
                )
                continue
            value = _convert(value_node, file, constructor, problems, inside)
            items[key] = _Node(value.value, value.at, key_at)
        return _Node(items, at)
    if isinstance(node, yaml.SequenceNode):
        return _Node([_convert(n, file, constructor, problems, inside) for n in node.value], at)
    return _Node(_scalar(node, at, constructor, problems), at)


def _scalar(
    node: yaml.Node, at: Position, constructor: SafeConstructor, problems: list[Problem]
) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        return None
    if node.tag == _TIMESTAMP:
        # As Kubernetes reads YAML (through JSON): a date is a string.
        return node.value
    try:
        return constructor.construct_object(node)
    except (ConstructorError, ValueError) as error:
        reason = error.problem if isinstance(error, ConstructorError) else str(error)
        problems.append(Problem(at, "", f"cannot read {node.value!r}: {reason}"))
        return node.value


def _plain(node: _Node) -> Any:
    if isinstance(node.value, dict):
        return {key: _plain(child) for key, child in node.value.items()}
    if isinstance(node.value, list):
        return [_plain(child) for child in node.value]
    return node.value


def _positions(node: _Node) -> dict[str, Position]:
    """Field path -> where it is written: a scalar's value; a mapping's or list's key, so
    a block below its key is found on the key's line."""
    return {
        path: child.key_at if isinstance(child.value, dict | list) and child.key_at else child.at
        for path, child in _walk(node, "")
        if path
    }


def _walk(node: _Node, path: str) -> Iterator[tuple[str, _Node]]:
    yield path, node
    if isinstance(node.value, dict):
        for key, child in node.value.items():
            yield from _walk(child, _child(path, key))
    elif isinstance(node.value, list):
        for index, child in enumerate(node.value):
            yield from _walk(child, f"{path}[{index}]")


def _from_plain(value: Any, at: Position) -> _Node:
    if isinstance(value, Mapping):
        return _Node({k: _from_plain(v, at) for k, v in value.items()}, at)
    if isinstance(value, list):
        return _Node([_from_plain(v, at) for v in value], at)
    return _Node(value, at)


def _overlay(base: _Node, top: _Node) -> _Node:
    """`top` over `base`: mappings merge key by key; a null in `top` keeps `base`."""
    if top.value is None:
        return base
    if isinstance(base.value, dict) and isinstance(top.value, dict):
        merged = dict(base.value)
        for key, child in top.value.items():
            merged[key] = _overlay(merged[key], child) if key in merged else child
        return _Node(merged, top.at, top.key_at)
    return top


def _expand(node: _Node, environ: Mapping[str, str], problems: list[Problem], path: str) -> _Node:
    """`${VAR}` and `${VAR:-default}` in string values, from the environment."""
    if isinstance(node.value, dict):
        items = {k: _expand(c, environ, problems, _child(path, k)) for k, c in node.value.items()}
        return _Node(items, node.at, node.key_at)
    if isinstance(node.value, list):
        listed = [_expand(c, environ, problems, f"{path}[{i}]") for i, c in enumerate(node.value)]
        return _Node(listed, node.at, node.key_at)
    if not isinstance(node.value, str) or "${" not in node.value:
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        problems.append(
            Problem(
                node.at,
                path,
                f"environment variable {name} is not set "
                f"(set it, or give a default: ${{{name}:-value}})",
            )
        )
        return ""

    return _Node(_ENV_REFERENCE.sub(substitute, node.value), node.at, node.key_at)


# --- Reading fields, reporting what is wrong ------------------------------------------


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    if isinstance(value, str):
        text = value if len(value) <= 40 else f"{value[:37]}..."
        return f"str {json.dumps(text)}"
    if isinstance(value, int | float):
        return f"{type(value).__name__} {value}"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return f"{type(value).__name__} {value}"


def closest(word: str, candidates: Sequence[str]) -> str | None:
    """The one candidate close to `word` (a likely typo), None when none is or several
    are equally close."""
    scored = sorted(
        ((difflib.SequenceMatcher(None, word, c).ratio(), c) for c in candidates), reverse=True
    )
    if not scored or scored[0][0] < 0.6 or (len(scored) > 1 and scored[1][0] == scored[0][0]):
        return None
    return scored[0][1]


def _one_of(allowed: Sequence[Any]) -> str:
    return ", ".join(str(a) for a in allowed)


class _Check:
    """Where the problems of one file go, with field names relative to it."""

    def __init__(self, home: str, problems: list[Problem], prefix: str = "") -> None:
        self.home = home
        self.problems = problems
        self.prefix = prefix

    def report(self, at: Position, path: str, message: str) -> None:
        if self.prefix:
            name = f"{self.prefix}.{path}" if path else self.prefix
        else:
            name = _field_name(path, at, self.home)
        self.problems.append(Problem(at, name, message))

    def fields(
        self,
        node: _Node | None,
        path: str,
        known: Sequence[str] | None,
        required: Sequence[str] = (),
    ) -> _Fields:
        return _Fields(self, node, path, known, required)


class _Fields:
    """The fields of one mapping, read one by one: a field that is missing or fails
    (reported) reads as the default given."""

    def __init__(
        self,
        check: _Check,
        node: _Node | None,
        path: str,
        known: Sequence[str] | None,
        required: Sequence[str],
    ) -> None:
        self.check = check
        self.path = path
        self.items: dict[str, _Node] = {}
        if node is None:
            return
        if not isinstance(node.value, dict):
            check.report(node.at, path, f"must be a mapping, got {_describe(node.value)}")
            return
        for key, child in node.value.items():
            if known is not None and key not in known:
                at = child.key_at or child.at
                if at.file != check.home:
                    continue  # in fleet.yaml's defaults: reported, and ignored, there
                close = closest(key, known)
                hint = (
                    f"did you mean {json.dumps(close)}?"
                    if close
                    else f"known fields: {_one_of(known)}"
                )
                check.report(at, _child(path, key), f"unknown field; {hint}")
            elif child.value is not None:
                # A null reads as not set, as in Kubernetes.
                self.items[key] = child
        for key in required:
            if key not in self.items:
                check.report(node.at, _child(path, key), "required field is missing")

    def __contains__(self, key: str) -> bool:
        return key in self.items

    def where(self, key: str) -> str:
        return _child(self.path, key)

    def fail(self, key: str, message: str) -> None:
        self.check.report(self.items[key].at, self.where(key), message)

    def string(
        self, key: str, default: str = "", pattern: re.Pattern[str] | None = None, what: str = ""
    ) -> str:
        value = self.items[key].value if key in self.items else default
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {_describe(value)}")
            return default
        if key in self.items and pattern is not None and not pattern.fullmatch(value):
            self.fail(key, f"must be {what}, got {json.dumps(value)}")
            return default
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        if key not in self.items:
            return default
        value = self.items[key].value
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"must be an integer, got {_describe(value)}")
            return default
        if not low <= value <= high:
            self.fail(key, f"must be from {low} to {high}, got {value}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.items:
            return default
        value = self.items[key].value
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {_describe(value)}")
            return default
        return value

    def choice(self, key: str, default: Any, allowed: Sequence[Any]) -> Any:
        if key not in self.items:
            return default
        value = self.items[key].value
        if type(value) is not type(allowed[0]):
            expected = "an integer" if isinstance(allowed[0], int) else "a string"
            self.fail(key, f"must be {expected}, got {_describe(value)}")
            return default
        if value not in allowed:
            self.fail(key, f"must be one of {_one_of(allowed)}, got {json.dumps(value)}")
            return default
        return value

    def mapping(
        self, key: str, known: Sequence[str] | None, required: Sequence[str] = ()
    ) -> _Fields:
        return _Fields(self.check, self.items.get(key), self.where(key), known, required)

    def sequence(self, key: str) -> list[tuple[str, _Node]]:
        """The items of a list field, each with its path."""
        if key not in self.items:
            return []
        value = self.items[key].value
        if not isinstance(value, list):
            self.fail(key, f"must be a list, got {_describe(value)}")
            return []
        return [(f"{self.where(key)}[{index}]", item) for index, item in enumerate(value)]


_NAME = "a DNS-1123 label (lower case letters, digits and '-', at most 63)"
_SUBDOMAIN = "a DNS-1123 subdomain (lower case letters, digits, '-' and '.')"
_PRODUCT = "a GPU product name as GFD reports it, e.g. NVIDIA-H100-80GB-HBM3"


# --- fleet.yaml -------------------------------------------------------------------------


def _datacenter(check: _Check, node: _Node, path: str) -> DatacenterDecl | None:
    fields = check.fields(node, path, DATACENTER_FIELDS, ("name", "region", "registry"))
    name = fields.string("name", "", _DNS_LABEL, _NAME)
    region = fields.string("region")
    registry = fields.mapping("registry", REGISTRY_FIELDS, ("url",))
    url = registry.string("url")
    if "url" in registry and registry.items["url"].value == "":
        registry.fail("url", "must not be empty")
    prometheus = fields.mapping("prometheus", PROMETHEUS_FIELDS)
    if not name:
        return None
    return DatacenterDecl(
        name=name,
        region=region,
        registry=RegistryDecl(
            url=url,
            ca_file=registry.string("caFile"),
            pull_through=registry.boolean("pullThrough", False),
        ),
        prometheus_url=prometheus.string("remoteWriteURL"),
        position=node.at,
    )


def _parse_fleet(
    root: _Node, environ: Mapping[str, str], problems: list[Problem]
) -> tuple[FleetDecl | None, _Node]:
    """fleet.yaml, and its defaults (with positions) for the clusters; None when it is
    not a mapping at all."""
    no_defaults = _Node({}, Position(FLEET_FILE, 1, 1))
    if not isinstance(root.value, dict):
        problems.append(Problem(root.at, "", f"must be a mapping, got {_describe(root.value)}"))
        return None, no_defaults
    check = _Check(FLEET_FILE, problems)
    root = _expand(root, environ, problems, "")
    fields = check.fields(root, "", FLEET_FIELDS, ("apiVersion", "kind", "datacenters"))
    for key, want in (("apiVersion", API_VERSION), ("kind", FLEET_KIND)):
        if key in fields and fields.items[key].value != want:
            fields.fail(key, f"must be {want}, got {_describe(fields.items[key].value)}")
    namespace = fields.string("namespace", DEFAULT_NAMESPACE, _DNS_LABEL, _NAME)
    datacenters: dict[str, DatacenterDecl] = {}
    listed = fields.sequence("datacenters")
    if not listed and "datacenters" in fields and fields.items["datacenters"].value == []:
        fields.fail("datacenters", "declare at least one datacenter")
    for path, item in listed:
        datacenter = _datacenter(check, item, path)
        if datacenter is None:
            continue
        if datacenter.name in datacenters:
            first = datacenters[datacenter.name].position
            check.report(
                item.value["name"].at,
                f"{path}.name",
                f"datacenter {json.dumps(datacenter.name)} is already declared "
                f"at line {first.line}",
            )
            continue
        datacenters[datacenter.name] = datacenter
    defaults = fields.items.get("defaults", no_defaults)
    # Checked once here, so a mistake in the defaults shows even with no cluster; each
    # cluster that takes a bad value reports the same problem, and dedupe() folds them.
    _cluster_fields(_Check(FLEET_FILE, problems, "defaults"), defaults, partial=True)
    if isinstance(defaults.value, dict):
        # Unknown fields (a `name` too) are reported above and given to no cluster.
        known = {k: c for k, c in defaults.value.items() if k in CLUSTER_FIELDS and k != "name"}
        defaults = _Node(known, defaults.at, defaults.key_at)
    else:
        defaults = no_defaults
    fleet = FleetDecl(
        namespace=namespace,
        datacenters=tuple(datacenters.values()),
        defaults=_plain(defaults),
        file=FLEET_FILE,
    )
    return fleet, defaults


# --- clusters/<name>.yaml ----------------------------------------------------------------


def _gpu_pool(check: _Check, node: _Node, path: str) -> GPUPool:
    fields = check.fields(node, path, GPU_POOL_FIELDS, ("name", "product", "nodes"))
    return GPUPool(
        name=fields.string("name", "", _DNS_LABEL, _NAME),
        product=fields.string("product", "", _LABEL_NAME, _PRODUCT),
        nodes=fields.integer("nodes", 0, 0, MAX_POOL_NODES),
        gpus_per_node=fields.integer("gpusPerNode", 8, 1, MAX_GPUS_PER_NODE),
        mig_profile=fields.string(
            "migProfile", "", _MIG_PROFILE, "a MIG profile such as 1g.10gb or balanced"
        ),
        time_slicing_replicas=fields.integer("timeSlicingReplicas", 0, 1, MAX_REPLICAS),
    )


def _cpu_pool(check: _Check, node: _Node, path: str) -> CPUPool:
    fields = check.fields(node, path, CPU_POOL_FIELDS, ("name", "nodes"))
    return CPUPool(
        name=fields.string("name", "", _DNS_LABEL, _NAME),
        nodes=fields.integer("nodes", 0, 0, MAX_POOL_NODES),
        size=fields.choice("size", "medium", SIZES),
    )


def _labels(fields: _Fields) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, child in fields.mapping("labels", None).items.items():
        path = _child("labels", key)
        prefix, _, name = key.rpartition("/")
        if not _LABEL_NAME.fullmatch(name) or (prefix and not _DNS_SUBDOMAIN.fullmatch(prefix)):
            fields.check.report(
                child.key_at or child.at,
                path,
                "not a valid label key: [prefix/]name, the name at most 63 letters, digits, "
                "'-', '_' or '.', the prefix a DNS subdomain",
            )
        elif is_fleet_label(key):
            fields.check.report(
                child.key_at or child.at,
                path,
                f"the {GROUP}/ prefix is fleet's own: fleet sets those labels",
            )
        elif not isinstance(child.value, str):
            text = str(child.value).lower() if isinstance(child.value, bool) else child.value
            fields.check.report(
                child.at,
                path,
                f'must be a string, got {_describe(child.value)} (quote it: "{text}")',
            )
        elif child.value and not _LABEL_NAME.fullmatch(child.value):
            fields.check.report(
                child.at,
                path,
                "not a valid label value: at most 63 letters, digits, '-', '_' or '.', "
                f"beginning and ending with a letter or digit, got {json.dumps(child.value)}",
            )
        else:
            labels[key] = child.value
    return labels


def _models(fields: _Fields) -> tuple[str, ...]:
    models: list[str] = []
    for path, item in fields.sequence("models"):
        model = ""
        if not isinstance(item.value, str):
            fields.check.report(item.at, path, f"must be a string, got {_describe(item.value)}")
        elif not _DNS_SUBDOMAIN.fullmatch(item.value):
            fields.check.report(
                item.at, path, f"must be {_SUBDOMAIN}, got {json.dumps(item.value)}"
            )
        elif item.value in models:
            fields.check.report(item.at, path, f"{json.dumps(item.value)} is listed twice")
        else:
            model = item.value
        # Kept even when wrong ("" then), so models[i] stays where it is written.
        models.append(model)
    return tuple(models)


def _cluster_fields(check: _Check, node: _Node, partial: bool = False) -> dict[str, Any]:
    """A cluster's fields, checked, by their name in the file; `partial` for fleet.yaml's
    defaults (no name, nothing required). A field that fails reads as its stand-in: ""
    for names, the built-in default otherwise; a pool stays in its place in the list."""
    known = [f for f in CLUSTER_FIELDS if not (partial and f == "name")]
    fields = check.fields(node, "", known, () if partial else REQUIRED_CLUSTER_FIELDS)
    control_plane = fields.mapping("controlPlane", ("replicas", "size"))
    values = fields.mapping("values", None)
    return {
        "name": fields.string("name", "", _DNS_LABEL, _NAME),
        "datacenter": fields.string("datacenter", "", _DNS_LABEL, _NAME),
        "blueprint": fields.string("blueprint", "", _DNS_LABEL, _NAME),
        "kubernetesVersion": fields.string(
            "kubernetesVersion", "", _VERSION, "vMAJOR.MINOR.PATCH, e.g. v1.35.4"
        ),
        "controlPlane": ControlPlane(
            replicas=control_plane.choice("replicas", 1, CONTROL_PLANE_REPLICAS),
            size=control_plane.choice("size", "small", SIZES),
        ),
        "gpuPools": tuple(_gpu_pool(check, n, p) for p, n in fields.sequence("gpuPools")),
        "cpuPools": tuple(_cpu_pool(check, n, p) for p, n in fields.sequence("cpuPools")),
        "labels": _labels(fields),
        "canary": fields.boolean("canary", False),
        "models": _models(fields),
        "values": {key: _plain(child) for key, child in values.items.items()},
        # A protection flag that cannot be read protects: the safe side of a mistake.
        "deletionProtection": fields.boolean("deletionProtection", True),
    }


def _parse_cluster(
    root: _Node, file: str, defaults: _Node, problems: list[Problem]
) -> ClusterDecl | None:
    top = Position(file, 1, 1)
    if not isinstance(root.value, dict):
        problems.append(Problem(root.at, "", f"must be a mapping, got {_describe(root.value)}"))
        return None
    merged = _overlay(_overlay(_from_plain(BUILTIN_DEFAULTS, top), defaults), root)
    out = _cluster_fields(_Check(file, problems), merged)
    positions = _positions(merged)
    for name in CLUSTER_FIELDS:
        positions.setdefault(name, top)
    return ClusterDecl(
        name=out["name"],
        datacenter=out["datacenter"],
        blueprint=out["blueprint"],
        kubernetes_version=out["kubernetesVersion"],
        control_plane=out["controlPlane"],
        gpu_pools=out["gpuPools"],
        cpu_pools=out["cpuPools"],
        labels=out["labels"],
        canary=out["canary"],
        models=out["models"],
        values=out["values"],
        deletion_protection=out["deletionProtection"],
        file=file,
        positions=positions,
    )


# --- addons/, profiles/, models/ ----------------------------------------------------------


def _parse_manifest(root: _Node, file: str, namespace: str, problems: list[Problem]) -> bool:
    """Whether a document is one of fleet's objects, as far as publishing it goes."""
    before = len(problems)
    check = _Check(file, problems)
    if not isinstance(root.value, dict):
        problems.append(Problem(root.at, "", f"must be a mapping, got {_describe(root.value)}"))
        return False
    fields = check.fields(root, "", None, ("apiVersion", "kind", "metadata"))
    if "apiVersion" in fields and fields.items["apiVersion"].value != API_VERSION:
        fields.fail(
            "apiVersion",
            f"must be {API_VERSION}, got {_describe(fields.items['apiVersion'].value)}",
        )
    kind = fields.items["kind"].value if "kind" in fields else None
    if kind is not None and kind not in MANIFEST_KINDS:
        fields.fail("kind", f"must be one of {_one_of(MANIFEST_KINDS)}, got {_describe(kind)}")
    metadata = fields.mapping("metadata", None, ("name",))
    metadata.string("name", "", _DNS_SUBDOMAIN, _SUBDOMAIN)
    if "namespace" in metadata and metadata.items["namespace"].value != namespace:
        metadata.fail(
            "namespace", f"must be the fleet's namespace {namespace} (fleet.yaml), or left out"
        )
    return len(problems) == before


# --- The whole repository ------------------------------------------------------------------


def cluster_file_name(path: str) -> bool:
    """Whether a repository path is a cluster file (`clusters/<name>.yaml`)."""
    parts = PurePosixPath(path).parts
    return len(parts) == 2 and parts[0] == CLUSTERS_DIR and parts[1].endswith(".yaml")


def manifest_file_name(path: str) -> bool:
    """Whether a repository path is a manifest file (`addons/*.yaml`, `profiles/*.yaml`,
    `models/*.yaml`)."""
    parts = PurePosixPath(path).parts
    return len(parts) == 2 and parts[0] in MANIFEST_DIRS and parts[1].endswith(".yaml")


def dedupe(problems: Sequence[Problem]) -> list[Problem]:
    """Each problem once, in file, line and column order."""
    unique = dict.fromkeys(problems)
    return sorted(
        unique,
        key=lambda p: (p.position.file, p.position.line, p.position.column, p.field, p.message),
    )


@dataclass(frozen=True, slots=True)
class Declarations:
    """What `parse_declarations` read: fleet.yaml (None when unusable), every cluster
    (sorted by name; those in `failed` hold stand-ins where their fields failed), and
    the manifests in path and document order."""

    fleet: FleetDecl | None
    clusters: tuple[ClusterDecl, ...]
    manifests: tuple[Manifest, ...]
    # The files of the clusters that have a problem of their own (or from the defaults).
    failed: frozenset[str] = frozenset()


def parse_declarations(
    files: Mapping[str, str], environ: Mapping[str, str]
) -> tuple[Declarations, list[Problem]]:
    """Parse a repository's files (repository-relative posix path -> text): fleet.yaml,
    clusters/*.yaml, addons|profiles|models/*.yaml; other paths are ignored. Every
    problem is returned, not the first; `${VAR}` is expanded in fleet.yaml only."""
    problems: list[Problem] = []
    fleet: FleetDecl | None = None
    defaults = _Node({}, Position(FLEET_FILE, 1, 1))
    if FLEET_FILE not in files:
        problems.append(Problem(Position(FLEET_FILE, 1, 1), "", "no fleet.yaml in the repository"))
    else:
        root = _single(files[FLEET_FILE], FLEET_FILE, "a Fleet", problems)
        if root is not None:
            fleet, defaults = _parse_fleet(root, environ, problems)
    namespace = fleet.namespace if fleet is not None else DEFAULT_NAMESPACE

    clusters: list[ClusterDecl] = []
    failed: set[str] = set()
    manifests: list[Manifest] = []
    for path in sorted(files):
        cluster = None
        if cluster_file_name(path):
            before = len(problems)
            root = _single(files[path], path, "one cluster", problems)
            # Without fleet.yaml the defaults are unknown: the YAML is all there is to check.
            if root is not None and fleet is not None:
                cluster = _parse_cluster(root, path, defaults, problems)
            if cluster is not None:
                clusters.append(cluster)
            if len(problems) > before:
                failed.add(path)
        elif manifest_file_name(path):
            for document in _documents(files[path], path, problems) or []:
                if document is not None and _parse_manifest(document, path, namespace, problems):
                    manifest = Manifest(document.at, _plain(document), _positions(document))
                    manifests.append(manifest)
    clusters.sort(key=lambda c: (c.name, c.file))
    declarations = Declarations(fleet, tuple(clusters), tuple(manifests), frozenset(failed))
    return declarations, dedupe(problems)
