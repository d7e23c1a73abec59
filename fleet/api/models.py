"""Typed, validated views of fleet's custom resources and of CAPI Clusters.

Bodies arrive as dicts from the API; these parsers turn them into frozen
dataclasses once, and a malformed body fails here with an error that names
the object and the field, instead of somewhere deep in a reconcile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.api import LABEL_CANARY, LABEL_DATACENTER
from fleet.errors import PermanentError
from fleet.rollout import RolloutError, RolloutSpec, parse_rollout

JSON = dict[str, Any]

SYNC_MODES = ("Continuous", "OneTime", "DryRun")
CLEANUP_POLICIES = ("Delete", "Orphan")
ADDON_KINDS = ("manifests", "helm")
DEFAULT_DRIFT_SECONDS = 180
DEFAULT_REVISION_HISTORY = 10


class InvalidSpec(PermanentError):
    """A custom resource's spec cannot be used as written."""


def _ref(body: JSON) -> str:
    meta = body.get("metadata", {})
    namespace = meta.get("namespace")
    name = meta.get("name", "?")
    return (
        f"{body.get('kind', 'object')} {namespace}/{name}"
        if namespace
        else f"{body.get('kind')} {name}"
    )


def _require(body: JSON, path: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(value, kind):
        expected = (
            kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        )
        raise InvalidSpec(f"{_ref(body)}: {path} must be a {expected}, got {value!r}")
    return value


def _or_empty(value: Any) -> Any:
    """An omitted (or null) field reads as empty; a present one is kept to be type-checked."""
    return {} if value is None else value


@dataclass(frozen=True, slots=True)
class ChartSource:
    repository: str
    name: str
    version: str
    values_template: str


@dataclass(frozen=True, slots=True)
class Addon:
    name: str
    namespace: str
    kind: str
    default_namespace: str
    templates: tuple[tuple[str, str], ...] = ()
    chart: ChartSource | None = None
    health_timeout_seconds: int = 300
    # A Namespace object for default_namespace when the add-on renders none.
    create_namespace: bool = False
    # Take over objects that exist on the cluster without fleet's label (migrations).
    adopt: bool = False
    # Labels the add-on keeps on the cluster's nodes matching node_selector (templates).
    node_selector: tuple[tuple[str, str], ...] = ()
    node_labels: tuple[tuple[str, str], ...] = ()
    spec: JSON = field(default_factory=dict, compare=False, hash=False)

    @property
    def reads_api_versions(self) -> bool:
        """Whether rendering looks at the cluster's served API versions: every chart may
        (`.Capabilities.APIVersions`), a template only when it names `api_versions`."""
        if self.kind == "helm":
            return True
        return any("api_versions" in text for _, text in self.templates)

    def require_chart(self) -> ChartSource:
        if self.chart is None:
            raise InvalidSpec(f"Addon {self.namespace}/{self.name}: kind {self.kind} has no chart")
        return self.chart


def parse_addon(body: JSON) -> Addon:
    spec = _require(body, "spec", body.get("spec"), dict)
    kind = spec.get("kind")
    if kind not in ADDON_KINDS:
        raise InvalidSpec(
            f"{_ref(body)}: spec.kind must be one of {', '.join(ADDON_KINDS)}, got {kind!r}"
        )
    templates: dict[str, str] = {}
    chart = None
    if kind == "manifests":
        templates = _require(body, "spec.templates", spec.get("templates"), dict)
        for name, text in templates.items():
            _require(body, f"spec.templates[{name!r}]", text, str)
    else:
        source = _require(body, "spec.chart", spec.get("chart"), dict)
        chart = ChartSource(
            repository=_require(body, "spec.chart.repository", source.get("repository", ""), str),
            name=_require(body, "spec.chart.name", source.get("name"), str),
            version=_require(body, "spec.chart.version", source.get("version"), str),
            values_template=_require(
                body, "spec.chart.valuesTemplate", source.get("valuesTemplate", ""), str
            ),
        )
    node_spec = _require(body, "spec.nodeLabels", _or_empty(spec.get("nodeLabels")), dict)
    node_selector = _string_map(body, "spec.nodeLabels.nodeSelector", node_spec.get("nodeSelector"))
    node_labels = _string_map(body, "spec.nodeLabels.labels", node_spec.get("labels"))
    meta = body["metadata"]
    return Addon(
        name=meta["name"],
        namespace=meta.get("namespace", ""),
        kind=kind,
        default_namespace=spec.get("defaultNamespace") or "default",
        templates=tuple(sorted(templates.items())),
        chart=chart,
        health_timeout_seconds=int(spec.get("health", {}).get("timeoutSeconds", 300)),
        create_namespace=_require(
            body, "spec.createNamespace", spec.get("createNamespace", False), bool
        ),
        adopt=_require(body, "spec.adopt", spec.get("adopt", False), bool),
        node_selector=node_selector,
        node_labels=node_labels,
        spec=spec,
    )


def _string_map(body: JSON, path: str, value: Any) -> tuple[tuple[str, str], ...]:
    found = _require(body, path, _or_empty(value), dict)
    for key, item in found.items():
        _require(body, f"{path}[{key!r}]", item, str)
    return tuple(sorted(found.items()))


@dataclass(frozen=True, slots=True)
class AddonEntry:
    """One add-on in a profile: which Addon, its values, what it waits for."""

    name: str
    values: JSON
    depends_on: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    namespace: str
    selector: JSON
    addons: tuple[AddonEntry, ...]
    sync_mode: str
    cleanup_policy: str
    drift_seconds: int
    paused: bool
    # Removing add-ons from more than this share of the profile's clusters (and more
    # than one) at once waits for a confirmation.
    max_removal_percent: int = 10
    # How a new revision reaches the clusters; None: all of them at once.
    rollout: RolloutSpec | None = None
    # Revisions kept (as ControllerRevisions) besides those in use, for undo and history.
    revision_history: int = DEFAULT_REVISION_HISTORY


def parse_profile(body: JSON) -> Profile:
    spec = _require(body, "spec", body.get("spec"), dict)
    entries = _require(body, "spec.addons", spec.get("addons", []), list)
    addons = []
    for index, entry in enumerate(entries):
        where = f"spec.addons[{index}]"
        _require(body, where, entry, dict)
        addons.append(
            AddonEntry(
                name=_require(body, f"{where}.name", entry.get("name"), str),
                values=_require(body, f"{where}.values", _or_empty(entry.get("values")), dict),
                depends_on=tuple(
                    _require(body, f"{where}.dependsOn", entry.get("dependsOn", []), list)
                ),
            )
        )
    names = [entry.name for entry in addons]
    for entry in addons:
        for dependency in entry.depends_on:
            if dependency not in names:
                raise InvalidSpec(
                    f"{_ref(body)}: add-on {entry.name!r} depends on {dependency!r}, "
                    "which is not in spec.addons"
                )
    sync_mode = spec.get("syncMode", "Continuous")
    if sync_mode not in SYNC_MODES:
        raise InvalidSpec(f"{_ref(body)}: spec.syncMode must be one of {', '.join(SYNC_MODES)}")
    cleanup = spec.get("cleanupPolicy", "Delete")
    if cleanup not in CLEANUP_POLICIES:
        raise InvalidSpec(
            f"{_ref(body)}: spec.cleanupPolicy must be one of {', '.join(CLEANUP_POLICIES)}"
        )
    drift = spec.get("drift", {})
    try:
        rollout = None if spec.get("rollout") is None else parse_rollout(spec["rollout"])
    except RolloutError as error:
        raise InvalidSpec(f"{_ref(body)}: spec.{error}") from error
    history = _require(
        body,
        "spec.revisionHistoryLimit",
        spec.get("revisionHistoryLimit", DEFAULT_REVISION_HISTORY),
        int,
    )
    return Profile(
        name=body["metadata"]["name"],
        namespace=body["metadata"].get("namespace", ""),
        selector=_require(body, "spec.clusterSelector", spec.get("clusterSelector", {}), dict),
        addons=tuple(addons),
        sync_mode=sync_mode,
        cleanup_policy=cleanup,
        drift_seconds=int(drift.get("intervalSeconds", DEFAULT_DRIFT_SECONDS)),
        paused=bool(spec.get("paused", False)),
        max_removal_percent=int((spec.get("safety") or {}).get("maxRemovalPercent", 10)),
        rollout=rollout,
        revision_history=max(1, history),
    )


@dataclass(frozen=True, slots=True)
class Cluster:
    """What fleet reads of a CAPI Cluster, v1beta1 or v1beta2 alike."""

    name: str
    namespace: str
    uid: str
    labels: JSON
    annotations: JSON
    paused: bool
    deleting: bool
    control_plane_ready: bool
    endpoint: str
    topology: JSON
    finalizers: tuple[str, ...] = ()
    resource_version: str = ""
    # As read: `cluster.x-k8s.io/v1beta2`, or v1beta1 where that is all that is served.
    api_version: str = ""

    @property
    def datacenter(self) -> str:
        return str(self.labels.get(LABEL_DATACENTER, ""))

    @property
    def canary(self) -> bool:
        return self.labels.get(LABEL_CANARY) == "true"


def _condition(conditions: list[JSON], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def parse_cluster(body: JSON) -> Cluster:
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    conditions = status.get("conditions") or []
    v1beta1_conditions = ((status.get("deprecated") or {}).get("v1beta1") or {}).get(
        "conditions"
    ) or []
    ready = bool(
        (status.get("initialization") or {}).get("controlPlaneInitialized")
        or status.get("controlPlaneReady")
        or _condition(conditions, "ControlPlaneInitialized")
        or _condition(conditions, "ControlPlaneAvailable")
        or _condition(v1beta1_conditions, "ControlPlaneReady")
    )
    endpoint = spec.get("controlPlaneEndpoint") or {}
    topology = spec.get("topology") or {}
    class_name = (topology.get("classRef") or {}).get("name") or topology.get("class", "")
    return Cluster(
        name=meta["name"],
        namespace=meta.get("namespace", ""),
        uid=meta.get("uid", ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        paused=bool(spec.get("paused")),
        deleting=bool(meta.get("deletionTimestamp")),
        control_plane_ready=ready,
        endpoint=f"{endpoint['host']}:{endpoint['port']}" if endpoint.get("host") else "",
        topology={
            "class": class_name,
            "version": topology.get("version", ""),
            "variables": {v["name"]: v.get("value") for v in topology.get("variables") or []},
        },
        finalizers=tuple(meta.get("finalizers") or ()),
        resource_version=meta.get("resourceVersion", ""),
        api_version=str(body.get("apiVersion", "")),
    )


@dataclass(frozen=True, slots=True)
class Datacenter:
    name: str
    region: str
    registry: JSON
    prometheus: JSON


def parse_datacenter(body: JSON) -> Datacenter:
    spec = body.get("spec") or {}
    return Datacenter(
        name=body["metadata"]["name"],
        region=spec.get("region", ""),
        registry=dict(spec.get("registry") or {}),
        prometheus=dict(spec.get("prometheus") or {}),
    )


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """An AddonDeployment's spec: the one place its defaults come from (the profile's)."""

    cluster: str
    profile: str
    revision: str
    sync_mode: str = SYNC_MODES[0]
    cleanup_policy: str = CLEANUP_POLICIES[0]
    drift_seconds: int = DEFAULT_DRIFT_SECONDS
    # The profile revision (a ControllerRevision's hash) whose add-ons this cluster gets.
    profile_revision: str = ""

    @classmethod
    def for_cluster(
        cls, profile: Profile, cluster: str, revision: str, profile_revision: str
    ) -> DeploymentSpec:
        return cls(
            cluster,
            profile.name,
            revision,
            profile.sync_mode,
            profile.cleanup_policy,
            profile.drift_seconds,
            profile_revision,
        )

    def to_json(self) -> JSON:
        return {
            "cluster": self.cluster,
            "profile": self.profile,
            "revision": self.revision,
            "syncMode": self.sync_mode,
            "cleanupPolicy": self.cleanup_policy,
            "driftIntervalSeconds": self.drift_seconds,
            "profileRevision": self.profile_revision,
        }


def parse_deployment_spec(body: JSON) -> DeploymentSpec:
    spec = _require(body, "spec", body.get("spec"), dict)
    return DeploymentSpec(
        cluster=_require(body, "spec.cluster", spec.get("cluster"), str),
        profile=_require(body, "spec.profile", spec.get("profile"), str),
        revision=_require(body, "spec.revision", spec.get("revision"), str),
        sync_mode=spec.get("syncMode", SYNC_MODES[0]),
        cleanup_policy=spec.get("cleanupPolicy", CLEANUP_POLICIES[0]),
        drift_seconds=int(spec.get("driftIntervalSeconds", DEFAULT_DRIFT_SECONDS)),
        profile_revision=str(spec.get("profileRevision", "")),
    )
