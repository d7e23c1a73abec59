"""Render an add-on's templates for one cluster: sandboxed Jinja2, then YAML.

Every template of every add-on is rendered before anything is applied, so a
broken template leaves a cluster untouched. Undefined variables are errors
(StrictUndefined), and the error names the add-on, the template, the line and
the variable.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import functools
import json
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from fleet.api.models import Addon, Cluster, Datacenter
from fleet.errors import PermanentError
from fleet.gpu import declared_gpus

JSON = dict[str, Any]
# libyaml's safe loader where PyYAML was built with it (ten times faster), else PyYAML's own.
LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RenderError(PermanentError):
    def __init__(self, addon: str, template: str, line: int | None, problem: str) -> None:
        where = f"template {template!r}" + (f" line {line}" if line else "")
        super().__init__(f"add-on {addon}: {where}: {problem}")
        self.addon, self.template, self.line, self.problem = addon, template, line, problem


@dataclass(frozen=True, slots=True)
class GPUInventory:
    """What the workload cluster's nodes say about its GPUs (GFD labels, allocatable)."""

    products: Mapping[str, int] = field(default_factory=dict)
    gpu_nodes: int = 0
    mig_capable_nodes: int = 0
    nodes: int = 0
    # Allocatable MIG devices by profile (the `mixed` strategy's nvidia.com/mig-<profile>).
    mig_slices: Mapping[str, int] = field(default_factory=dict)
    # Time-slicing replicas per GPU, as GFD labels them (1: not shared).
    replicas: int = 1

    @property
    def total(self) -> int:
        return sum(self.products.values())

    def as_context(self) -> JSON:
        return {
            "products": dict(sorted(self.products.items())),
            "total": self.total,
            "gpu_nodes": self.gpu_nodes,
            "mig_capable_nodes": self.mig_capable_nodes,
            "nodes": self.nodes,
            "mig_slices": dict(sorted(self.mig_slices.items())),
            "replicas": self.replicas,
        }


def kubelet_version(nodes: list[JSON]) -> str:
    """The newest kubelet version among the nodes (what `kubectl get nodes` shows)."""
    versions = {
        ((n.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "") for n in nodes
    }
    versions.discard("")
    return max(versions, key=_version_key, default="")


def _version_key(version: str) -> tuple[int, ...]:
    digits = [part for part in version.lstrip("v").split("-")[0].split(".") if part.isdigit()]
    return tuple(int(part) for part in digits)


MIG_RESOURCE_PREFIX = "nvidia.com/mig-"


def gpu_inventory(nodes: list[JSON]) -> GPUInventory:
    products: dict[str, int] = {}
    slices: dict[str, int] = {}
    gpu_nodes = mig = 0
    replicas = 1
    for node in nodes:
        labels = node.get("metadata", {}).get("labels") or {}
        allocatable = node.get("status", {}).get("allocatable") or {}
        count = int(allocatable.get("nvidia.com/gpu", 0))
        node_slices = {
            resource.removeprefix(MIG_RESOURCE_PREFIX): int(value)
            for resource, value in allocatable.items()
            if resource.startswith(MIG_RESOURCE_PREFIX) and str(value).isdigit() and int(value)
        }
        if count <= 0 and not node_slices:
            continue
        gpu_nodes += 1
        for size, value in node_slices.items():
            slices[size] = slices.get(size, 0) + value
        if count > 0:
            product = labels.get("nvidia.com/gpu.product", "unknown")
            products[product] = products.get(product, 0) + count
        mig += labels.get("nvidia.com/mig.capable") == "true"
        shared = labels.get("nvidia.com/gpu.replicas", "1")
        replicas = max(replicas, int(shared) if shared.isdigit() else 1)
    return GPUInventory(
        products=products,
        gpu_nodes=gpu_nodes,
        mig_capable_nodes=mig,
        nodes=len(nodes),
        mig_slices=slices,
        replicas=replicas,
    )


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the workload cluster's API serves, as Helm's `.Capabilities` has it."""

    kube_version: str = ""
    # Served group/versions (`v1`, `apps/v1`, `monitoring.coreos.com/v1`), sorted; read only
    # for add-ons that ask (helm charts, templates naming `api_versions`).
    api_versions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RenderContext:
    cluster: Cluster
    datacenter: Datacenter | None
    gpu: GPUInventory
    capabilities: Capabilities = Capabilities()

    def variables(self, addon: Addon, values: JSON) -> JSON:
        cluster = self.cluster
        datacenter = self.datacenter
        return {
            "cluster": {
                "name": cluster.name,
                "namespace": cluster.namespace,
                "labels": cluster.labels,
                "annotations": cluster.annotations,
                "topology": cluster.topology,
                "endpoint": cluster.endpoint,
                "datacenter": cluster.datacenter,
                "gpu": declared_gpus(cluster.labels).as_context(),
                "kubernetes_version": self.capabilities.kube_version,
                "api_versions": list(self.capabilities.api_versions),
            },
            "datacenter": {
                "name": datacenter.name,
                "region": datacenter.region,
                "registry": datacenter.registry,
                "prometheus": datacenter.prometheus,
            }
            if datacenter
            else {},
            "gpu": self.gpu.as_context(),
            "values": values,
            "addon": {"name": addon.name, "namespace": addon.default_namespace},
        }


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip("\n")


def _b64encode(value: str) -> str:
    return base64.b64encode(str(value).encode()).decode()


class TemplateFailed(Exception):
    """`fail(message)` in a template: the add-on refuses to render for this cluster."""


def _fail(message: str) -> str:
    raise TemplateFailed(str(message))


# Limits on what one template may make: a template is code run by the controller.
MAX_STRING = 4 * 1024 * 1024
MAX_OUTPUT = 32 * 1024 * 1024
MAX_OBJECT_BYTES = 1024 * 1024


class _LimitedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, plus a cap on strings and lists built by `*` and `**` (`'x' * 10**9`)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 1000:
            raise jinja2.exceptions.SecurityError(f"exponent {right} is over the limit of 1000")
        if operator == "*":
            sized = [v for v in (left, right) if isinstance(v, str | list | tuple)]
            counts = [v for v in (left, right) if isinstance(v, int)]
            wanted = len(sized[0]) * counts[0] if sized and counts else 0
            if wanted > MAX_STRING:
                raise jinja2.exceptions.SecurityError(
                    f"a value of {wanted} items is over the limit of {MAX_STRING}"
                )
        return super().call_binop(context, operator, left, right)


def _environment() -> jinja2.Environment:
    environment = _LimitedSandbox(
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters.update(
        to_yaml=_to_yaml, b64encode=_b64encode, tojson=_strict_filter(environment.filters["tojson"])
    )
    environment.globals.update(fail=_fail)
    return environment


def _strict_filter(wrapped: Any) -> Any:
    """A filter that, given an undefined value, says which variable it is (as printing it
    would) instead of failing later on an object it cannot serialize."""

    @functools.wraps(wrapped)
    def strict(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()
        return wrapped(context, value, *args, **kwargs)

    return strict


ENVIRONMENT = _environment()
_UNDEFINED = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'")


def _template_line(error: BaseException) -> int | None:
    """The template line an error was raised at (Jinja rewrites tracebacks to point there)."""
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename == "<template>"
    ]
    return lines[-1] if lines else None


def _bounded(addon: str, name: str, chunks: Any) -> str:
    parts, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise RenderError(addon, name, None, f"output is over the limit of {MAX_OUTPUT} bytes")
        parts.append(chunk)
    return "".join(parts)


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> jinja2.Template:
    """A template compiled once per text: every cluster renders the same few templates."""
    return ENVIRONMENT.from_string(text)


def _known_paths(variables: JSON, depth: int = 3, prefix: str = "") -> dict[str, str]:
    """Every key a template can reach, by its dotted path: top-level variables and keys
    of their mappings."""
    paths = {}
    for key, value in variables.items():
        paths[f"{prefix}{key}"] = key
        if depth > 1 and isinstance(value, dict):
            paths |= _known_paths(value, depth - 1, f"{prefix}{key}.")
    return paths


def _closest(variable: str, variables: JSON) -> str | None:
    """The known name an undefined one was most likely meant to be (`totl` → `total`).
    A name that exists, only elsewhere, was looked up under the wrong parent: its full
    path is the hint (`cluster.gpu.replicas` → `gpu.replicas`)."""
    paths = _known_paths(variables)
    names = sorted(set(paths.values()))
    found = difflib.get_close_matches(variable, names, n=1, cutoff=0.6)
    if not found:
        return None
    if found[0] != variable:
        return found[0]
    return " or ".join(sorted(path for path, name in paths.items() if name == variable)[:3])


def render_text(addon: str, name: str, text: str, variables: JSON) -> str:
    try:
        return _bounded(addon, name, _compiled(text).generate(variables))
    except jinja2.TemplateSyntaxError as error:
        raise RenderError(addon, name, error.lineno, f"syntax error: {error.message}") from error
    except jinja2.UndefinedError as error:
        match = _UNDEFINED.search(str(error))
        variable = next((g for g in match.groups() if g), "?") if match else "?"
        hint = _closest(variable, variables)
        raise RenderError(
            addon,
            name,
            _template_line(error),
            f"undefined variable {variable!r} ({error})"
            + (f"; did you mean {hint!r}?" if hint else ""),
        ) from error
    except jinja2.exceptions.SecurityError as error:
        raise RenderError(addon, name, _template_line(error), f"not allowed: {error}") from error
    except TemplateFailed as error:
        raise RenderError(addon, name, _template_line(error), f"fail(): {error}") from error
    except (TypeError, ValueError, ArithmeticError, LookupError) as error:
        raise RenderError(addon, name, _template_line(error), str(error)) from error


def parse_objects(addon: str, name: str, text: str) -> list[JSON]:
    try:
        documents = [doc for doc in yaml.load_all(text, Loader=LOADER) if doc is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise RenderError(addon, name, line, f"rendered YAML is invalid: {error}") from error
    objects = []
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            raise RenderError(addon, name, None, f"document {index + 1} is not a mapping")
        missing = [k for k in ("apiVersion", "kind") if not document.get(k)]
        if not (document.get("metadata") or {}).get("name"):
            missing.append("metadata.name")
        if missing:
            raise RenderError(addon, name, None, f"document {index + 1} lacks {', '.join(missing)}")
        size = len(json.dumps(document, default=str))
        if size > MAX_OBJECT_BYTES:
            meta = document["metadata"]
            raise RenderError(
                addon,
                name,
                None,
                f"{document['kind']} {meta['name']} is {size / 1e6:.1f} MB, over the limit of "
                f"{MAX_OBJECT_BYTES // 1024} KiB for one object (a Kubernetes API server stores "
                "at most about 1.5 MB per object)",
            )
        objects.append(document)
    return objects


def render_manifests(addon: Addon, values: JSON, context: RenderContext) -> list[JSON]:
    """All objects of a `manifests` add-on for one cluster, in template-name order."""
    variables = context.variables(addon, values)
    objects: list[JSON] = []
    for name, text in addon.templates:
        rendered = render_text(addon.name, name, text, variables)
        objects.extend(parse_objects(addon.name, name, rendered))
    return objects


ChartTemplater = Callable[[Addon, JSON], list[JSON]]
VALUES_TEMPLATE = "valuesTemplate"


def render_chart_values(addon: Addon, values: JSON, context: RenderContext) -> JSON:
    """The chart values of a helm add-on: its valuesTemplate rendered for one cluster."""
    text = render_text(
        addon.name,
        VALUES_TEMPLATE,
        addon.require_chart().values_template,
        context.variables(addon, values),
    )
    try:
        rendered = yaml.load(text, Loader=LOADER) if text.strip() else {}  # noqa: S506 (safe)
    except yaml.YAMLError as error:
        raise RenderError(
            addon.name, VALUES_TEMPLATE, None, f"rendered values are not valid YAML: {error}"
        ) from error
    if not isinstance(rendered, dict):
        raise RenderError(addon.name, VALUES_TEMPLATE, None, "rendered values are not a mapping")
    return rendered


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def render_node_labels(addon: Addon, values: JSON, context: RenderContext) -> dict[str, str]:
    """The node labels an add-on keeps on this cluster (`spec.nodeLabels.labels` rendered);
    an empty value means the label is not wanted."""
    if not addon.node_labels:
        return {}
    variables = context.variables(addon, values)
    labels = {}
    for key, text in addon.node_labels:
        where = f"nodeLabels.labels[{key!r}]"
        value = render_text(addon.name, where, text, variables).strip()
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise RenderError(
                addon.name,
                where,
                None,
                f"{value[:80]!r} is not a valid label value (at most 63 characters: letters, "
                "digits, '-', '_', '.', starting and ending with a letter or digit)",
            )
        labels[key] = value
    return labels


def chart_repository(addon: Addon, values: JSON, context: RenderContext) -> str:
    """Where this cluster pulls the add-on's chart: `chart.repository` rendered with the
    add-on's variables, or, when empty, the charts repository of the cluster's datacenter."""
    source = addon.require_chart()
    if source.repository.strip():
        return render_text(
            addon.name, "chart.repository", source.repository, context.variables(addon, values)
        ).strip()
    url = str((context.datacenter.registry if context.datacenter else {}).get("url") or "")
    if not url:
        raise RenderError(
            addon.name,
            "chart.repository",
            None,
            f"chart.repository is empty and cluster {context.cluster.name} has no datacenter "
            "registry to pull the chart from: set chart.repository or the Datacenter's "
            "spec.registry.url",
        )
    return f"oci://{url.removeprefix('https://').removeprefix('http://').rstrip('/')}/charts"


def _with_namespace(addon: Addon, objects: list[JSON]) -> list[JSON]:
    """The add-on's objects, a Namespace for its default namespace first when asked for one
    and none is rendered."""
    if not addon.create_namespace or any(
        o.get("kind") == "Namespace" and o["metadata"]["name"] == addon.default_namespace
        for o in objects
    ):
        return objects
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": addon.default_namespace},
    }
    return [namespace, *objects]


def render_addon(
    addon: Addon, values: JSON, context: RenderContext, charts: ChartTemplater | None = None
) -> list[JSON]:
    """All objects of an add-on for one cluster; helm charts go through `charts`."""
    if addon.kind == "manifests":
        return _with_namespace(addon, render_manifests(addon, values, context))
    if charts is None:
        raise PermanentError(f"add-on {addon.name}: no chart renderer for kind {addon.kind!r}")
    chart = dataclasses.replace(
        addon.require_chart(), repository=chart_repository(addon, values, context)
    )
    here = dataclasses.replace(addon, chart=chart)
    return _with_namespace(addon, charts(here, render_chart_values(addon, values, context)))
