"""Blueprints: what turns a short cluster declaration into Cluster API manifests.

A blueprint is a folder holding `blueprint.yaml` (its ClusterClass, whether it needs
GPU pools, and the inputs a cluster's `values` may set, with their types and
defaults) and `cluster.yaml.j2` (the Jinja2 template of one Cluster). This module
finds a blueprint by name, loads it, and checks a cluster's `values` against its
inputs, so that a wrong value is reported at its own line of the cluster's file
instead of surfacing as a schema error on the management cluster, or not at all.

A repository may carry its own blueprints, which take precedence over those named
by `$FLEET_BLUEPRINTS` and over the ones shipped with fleet.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import fleet
from fleet.api.declarations import ClusterDecl, Position, Problem, closest

BLUEPRINTS_DIR = "blueprints"
BLUEPRINTS_ENV = "FLEET_BLUEPRINTS"
BLUEPRINT_FILE = "blueprint.yaml"
TEMPLATE_FILE = "cluster.yaml.j2"
# The blueprints shipped with fleet: the project's top-level folder, next to the package.
BUILTIN_BLUEPRINTS = Path(fleet.__file__).resolve().parents[1] / BLUEPRINTS_DIR

INPUT_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
}
INPUT_FORMATS = ("cidr",)
# A blueprint name is a folder name: nothing that could climb out of the search path.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UnknownBlueprint(LookupError):
    """No folder of the search path holds a blueprint of that name."""

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(known) if known else "none"
        super().__init__(f"unknown blueprint {name!r} (known: {listed})")
        self.name, self.known = name, known


@dataclass(frozen=True, slots=True)
class Input:
    """One value a cluster may give its blueprint; no default means it must."""

    name: str
    type: str
    default: Any = None
    description: str = ""
    enum: tuple[Any, ...] = ()
    format: str = ""

    @property
    def required(self) -> bool:
        return self.default is None

    def check(self, value: Any) -> str | None:
        """Why `value` does not fit this input, None when it does."""
        # bool is an int in Python; YAML's `true` is not an integer, nor 1 a boolean.
        if not isinstance(value, INPUT_TYPES[self.type]) or (
            self.type == "integer" and isinstance(value, bool)
        ):
            article = "an" if self.type == "integer" else "a"
            return f"must be {article} {self.type}, not {_type_name(value)} {value!r}"
        if self.enum and value not in self.enum:
            choices = ", ".join(str(choice) for choice in self.enum)
            return f"{value!r} is not one of {choices}"
        if self.format == "cidr" and isinstance(value, str):
            try:
                ipaddress.ip_network(value, strict=True)
            except ValueError as error:
                return f"{value!r} is not a CIDR block ({error})"
        return None


@dataclass(frozen=True, slots=True)
class Blueprint:
    name: str
    directory: Path
    description: str
    cluster_class: str
    requires_gpus: bool
    inputs: tuple[Input, ...]
    template: str
    # The template's file as problems name it (relative to the repository when inside it).
    template_file: str

    def input(self, name: str) -> Input | None:
        return next((i for i in self.inputs if i.name == name), None)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def search_path(repository_root: Path) -> list[Path]:
    """Where blueprints are looked for, first match wins: the repository's own
    `blueprints/`, the folders of `$FLEET_BLUEPRINTS` (os.pathsep-separated), fleet's."""
    extra = [Path(p) for p in os.environ.get(BLUEPRINTS_ENV, "").split(os.pathsep) if p]
    return [repository_root / BLUEPRINTS_DIR, *extra, BUILTIN_BLUEPRINTS]


def known_blueprints(repository_root: Path) -> list[str]:
    names = {
        entry.parent.name
        for folder in search_path(repository_root)
        if folder.is_dir()
        for entry in folder.glob(f"*/{BLUEPRINT_FILE}")
    }
    return sorted(names)


def find_blueprint(repository_root: Path, name: str) -> Path:
    """The folder of the blueprint `name`; raises UnknownBlueprint listing the known ones."""
    if _NAME.match(name):
        for folder in search_path(repository_root):
            if (folder / name / BLUEPRINT_FILE).is_file():
                return folder / name
    raise UnknownBlueprint(name, known_blueprints(repository_root))


def display_path(path: Path, repository_root: Path) -> str:
    """A file as problems name it: relative to the repository when inside it."""
    try:
        return path.resolve().relative_to(repository_root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _positions(node: yaml.Node, file: str, prefix: str = "") -> dict[str, Position]:
    """The position of every mapping key, by dotted path (`inputs.podCIDR.type`)."""
    found: dict[str, Position] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}{key.value}"
            found[path] = Position(file, key.start_mark.line + 1, key.start_mark.column + 1)
            found |= _positions(value, file, f"{path}.")
    return found


_BLUEPRINT_KEYS = ("description", "class", "requiresGPUs", "inputs")
_INPUT_KEYS = ("type", "default", "description", "enum", "format")


def load_blueprint(
    directory: Path, repository_root: Path
) -> tuple[Blueprint | None, list[Problem]]:
    """The blueprint in `directory`, or None and every problem of its blueprint.yaml."""
    spec_path, template_path = directory / BLUEPRINT_FILE, directory / TEMPLATE_FILE
    file = display_path(spec_path, repository_root)
    top = Position(file, 1, 1)
    try:
        text = spec_path.read_text()
        node = yaml.compose(text, Loader=_LOADER)
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 (a safe loader)
    except (OSError, UnicodeDecodeError) as error:
        return None, [Problem(top, "blueprint", f"cannot be read: {error}")]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = Position(file, mark.line + 1, mark.column + 1) if mark else top
        return None, [Problem(where, "blueprint", f"invalid YAML: {error}")]
    if not isinstance(data, dict):
        return None, [Problem(top, "blueprint", "must be a mapping")]
    positions = _positions(node, file) if node is not None else {}

    problems: list[Problem] = []

    def problem(path: str, message: str) -> None:
        problems.append(Problem(positions.get(path, top), path, message))

    for key in data:
        if key not in _BLUEPRINT_KEYS:
            problem(str(key), f"unknown field{_suggestion(str(key), _BLUEPRINT_KEYS)}")
    cluster_class = data.get("class")
    if not isinstance(cluster_class, str) or not cluster_class:
        problem("class", "the ClusterClass name is required (a non-empty string)")
    requires_gpus = data.get("requiresGPUs", False)
    if not isinstance(requires_gpus, bool):
        problem("requiresGPUs", f"must be true or false, not {requires_gpus!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        problem("description", "must be a string")
    raw_inputs = data.get("inputs") or {}
    inputs: list[Input] = []
    if not isinstance(raw_inputs, dict):
        problem("inputs", "must be a mapping of input name to {type, default, description}")
        raw_inputs = {}
    for name, raw in sorted(raw_inputs.items(), key=lambda item: str(item[0])):
        found = _input(str(name), raw, f"inputs.{name}", problem)
        if found is not None:
            inputs.append(found)
    try:
        template = template_path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        problems.append(
            Problem(
                Position(display_path(template_path, repository_root), 1, 1),
                "template",
                f"cannot be read: {error}",
            )
        )
        template = ""
    if problems:
        return None, problems
    return Blueprint(
        name=directory.name,
        directory=directory,
        description=str(description),
        cluster_class=str(cluster_class),
        requires_gpus=bool(requires_gpus),
        inputs=tuple(inputs),
        template=template,
        template_file=display_path(template_path, repository_root),
    ), []


def _input(name: str, raw: Any, path: str, problem: Callable[[str, str], None]) -> Input | None:
    """One input of blueprint.yaml, or None after reporting what is wrong with it."""
    if not isinstance(raw, dict):
        problem(path, "must be a mapping with type, default and description")
        return None
    ok = True
    for key in raw:
        if key not in _INPUT_KEYS:
            problem(f"{path}.{key}", f"unknown field{_suggestion(str(key), _INPUT_KEYS)}")
            ok = False
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in INPUT_TYPES:
        problem(f"{path}.type", f"must be one of {', '.join(INPUT_TYPES)}, not {kind!r}")
        return None
    enum = raw.get("enum") or []
    if not isinstance(enum, list):
        problem(f"{path}.enum", "must be a list of the allowed values")
        return None
    fmt = raw.get("format") or ""
    if not isinstance(fmt, str) or (fmt and fmt not in INPUT_FORMATS):
        problem(f"{path}.format", f"must be one of {', '.join(INPUT_FORMATS)}, not {fmt!r}")
        return None
    found = Input(
        name=name,
        type=kind,
        default=raw.get("default"),
        description=str(raw.get("description") or ""),
        enum=tuple(enum),
        format=fmt,
    )
    plain = Input(name, kind)
    for choice in enum:
        if (why := plain.check(choice)) is not None:
            problem(f"{path}.enum", f"choice {why}")
            ok = False
    if found.default is not None and (why := found.check(found.default)) is not None:
        problem(f"{path}.default", why)
        ok = False
    return found if ok else None


def _suggestion(name: str, known: Iterable[str]) -> str:
    close = closest(name, [str(k) for k in known])
    return f"; did you mean {close!r}?" if close else ""


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _value_path(key: str) -> str:
    """A value's field path as declarations name it (`values.podCIDR`, `values["a.b"]`)."""
    return f"values.{key}" if _PLAIN_KEY.fullmatch(key) else f"values[{json.dumps(key)}]"


def resolve_inputs(
    blueprint: Blueprint, cluster: ClusterDecl
) -> tuple[dict[str, Any], list[Problem]]:
    """The cluster's values with the blueprint's defaults applied, sorted by name, and a
    problem for every value the blueprint does not declare, or of the wrong type, and for
    every required input left out."""
    problems: list[Problem] = []
    names = [i.name for i in blueprint.inputs]
    for key in sorted(cluster.values):
        declared = blueprint.input(key)
        if declared is None:
            listed = ", ".join(names) if names else "none"
            problems.append(
                cluster.problem(
                    _value_path(key),
                    f"blueprint {blueprint.name} has no input {key!r}"
                    f"{_suggestion(key, names)} (its inputs: {listed})",
                )
            )
        elif (why := declared.check(cluster.values[key])) is not None:
            problems.append(cluster.problem(_value_path(key), why))
    resolved: dict[str, Any] = {}
    for declared in blueprint.inputs:
        if declared.name in cluster.values:
            resolved[declared.name] = cluster.values[declared.name]
        elif declared.required:
            problem = cluster.problem(
                "values",
                f"blueprint {blueprint.name} requires the input {declared.name!r}"
                + (f" ({declared.description})" if declared.description else ""),
            )
            problems.append(problem)
        else:
            resolved[declared.name] = declared.default
    return resolved, problems


def check_pools(blueprint: Blueprint, cluster: ClusterDecl) -> list[Problem]:
    """A GPU blueprint needs GPU pools; a CPU one refuses them."""
    if blueprint.requires_gpus and not cluster.gpu_pools:
        return [
            # No pools to point at: the choice to fix is the blueprint's line.
            cluster.problem(
                "blueprint",
                f"blueprint {blueprint.name} makes GPU clusters: declare at least one GPU pool "
                "(gpuPools) or choose a CPU blueprint",
            )
        ]
    if not blueprint.requires_gpus and cluster.gpu_pools:
        return [
            cluster.problem(
                "gpuPools",
                f"blueprint {blueprint.name} makes CPU-only clusters: remove the GPU pools "
                "or choose a GPU blueprint",
            )
        ]
    return []
