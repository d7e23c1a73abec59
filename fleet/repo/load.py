"""Reading a fleet repository directory, and the checks that need all of it at once.

`fleet.api.declarations` parses each file on its own; what no single file can tell
is checked here (`check_repository`): a cluster in a datacenter fleet.yaml does not
declare, two files declaring one cluster, a GPU pool its product cannot honour, a
profile that selects no declared cluster or names an add-on nobody provides, a model
nobody publishes. `load_repository` runs both and returns every problem at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath

from fleet.api.declarations import (
    CLUSTERS_DIR,
    FLEET_FILE,
    MANIFEST_DIRS,
    ClusterDecl,
    Manifest,
    Position,
    Problem,
    Repository,
    closest,
    cluster_labels,
    dedupe,
    mig_config_name,
    parse_declarations,
)
from fleet.api.models import InvalidSpec, Profile, parse_addon, parse_profile
from fleet.gpu import mig_devices
from fleet.select import InvalidSelector, matches

# The add-ons fleet ships (addons/ of this project): a profile may name them without
# the repository declaring them.
BUILTIN_ADDONS = ("gpu-operator", "monitoring", "model-cache", "webhooks")
_IGNORED = ("README", "readme")


def read_files(root: Path) -> tuple[dict[str, str], list[Problem]]:
    """The texts a repository's declarations are parsed from (repository-relative posix
    path -> text), and what cannot be read or is misplaced."""
    files: dict[str, str] = {}
    problems: list[Problem] = []

    def read(path: Path, name: str) -> None:
        try:
            files[name] = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            problems.append(Problem(Position(name, 1, 1), "", f"not UTF-8 text: {error.reason}"))
        except OSError as error:
            problems.append(Problem(Position(name, 1, 1), "", f"cannot be read: {error.strerror}"))

    if (root / FLEET_FILE).is_file():
        read(root / FLEET_FILE, FLEET_FILE)
    for directory in (CLUSTERS_DIR, *MANIFEST_DIRS):
        if not (root / directory).is_dir():
            continue
        for entry in sorted((root / directory).iterdir()):
            name = f"{directory}/{entry.name}"
            if entry.name.startswith(".") or entry.name.startswith(_IGNORED):
                continue
            if entry.is_file() and entry.name.endswith(".yaml"):
                read(entry, name)
            elif entry.name.endswith(".yml"):
                problems.append(
                    Problem(Position(name, 1, 1), "", "rename to .yaml: only *.yaml files are read")
                )
            elif directory == CLUSTERS_DIR:
                problems.append(
                    Problem(
                        Position(name, 1, 1),
                        "",
                        "not a cluster file: clusters/ holds one <name>.yaml file per cluster",
                    )
                )
    return files, problems


def load_repository(
    root: Path, *, environ: Mapping[str, str] | None = None
) -> tuple[Repository | None, list[Problem]]:
    """The repository at `root`, and every problem in it (sorted by file, line and
    column), the cross-checks of `check_repository` included. None only when fleet.yaml
    itself is unusable (missing, not YAML, not a mapping).

    With problems, the repository is for reporting only: its `clusters` are those whose
    own files (and the defaults they take) have no problem. `${VAR}` references in
    fleet.yaml are read from `environ` (the process environment by default)."""
    if not root.is_dir():
        return None, [Problem(Position(str(root), 1, 1), "", "no such directory")]
    files, problems = read_files(root)
    declarations, found = parse_declarations(files, os.environ if environ is None else environ)
    problems += found
    if declarations.fleet is None:
        return None, dedupe(problems)
    everything = Repository(root, declarations.fleet, declarations.clusters, declarations.manifests)
    # Cross-checks see every cluster, those with problems too, so one run shows all.
    problems += check_repository(everything)
    clean = tuple(c for c in declarations.clusters if c.file not in declarations.failed)
    return replace(everything, clusters=clean), dedupe(problems)


def check_repository(repository: Repository) -> list[Problem]:
    """What no single file can tell: unknown datacenters, clusters declared twice or in a
    file of another name, node pools their GPUs cannot honour, profiles that select no
    declared cluster or name an unknown add-on, models no ModelArtifact declares."""
    problems = [
        *_datacenters(repository),
        *_names(repository.clusters),
        *(p for cluster in repository.clusters for p in _pools(cluster)),
        *_manifests(repository),
        *_models(repository),
    ]
    return dedupe(problems)


def _hint(name: str, known: Iterable[str]) -> str:
    close = closest(name, list(known))
    return f"did you mean {json.dumps(close)}? " if close else ""


def _datacenters(repository: Repository) -> Iterable[Problem]:
    known = sorted(d.name for d in repository.fleet.datacenters)
    for cluster in repository.clusters:
        if cluster.datacenter and cluster.datacenter not in known:
            yield cluster.problem(
                "datacenter",
                f"unknown datacenter {json.dumps(cluster.datacenter)}; "
                f"{_hint(cluster.datacenter, known)}"
                f"fleet.yaml declares {', '.join(known) or 'none'}",
            )


def _names(clusters: Iterable[ClusterDecl]) -> Iterable[Problem]:
    by_name: dict[str, list[ClusterDecl]] = {}
    for cluster in clusters:
        if cluster.name:
            by_name.setdefault(cluster.name, []).append(cluster)
    for name, group in sorted(by_name.items()):
        # The file named for the cluster holds it; another file is the duplicate.
        group.sort(key=lambda c: (_stem(c) != name, c.file))
        first = group[0]
        if first.file and _stem(first) != name:
            yield first.problem(
                "name",
                f"{json.dumps(name)} does not match the file name "
                f"{PurePosixPath(first.file).name}: a cluster file is named <name>.yaml",
            )
        for other in group[1:]:
            yield other.problem(
                "name",
                f"cluster {json.dumps(name)} is already declared in {first.file} "
                f"(at {first.position('name')})",
            )


def _stem(cluster: ClusterDecl) -> str:
    return PurePosixPath(cluster.file).name.removesuffix(".yaml")


def _pools(cluster: ClusterDecl) -> Iterable[Problem]:
    seen: dict[str, str] = {}
    pools = [*(("gpuPools", i, p.name) for i, p in enumerate(cluster.gpu_pools))]
    pools += [("cpuPools", i, p.name) for i, p in enumerate(cluster.cpu_pools)]
    for kind, index, name in pools:
        path = f"{kind}[{index}]"
        if name and name in seen:
            yield cluster.problem(
                f"{path}.name",
                f"pool name {json.dumps(name)} is already used by {seen[name]}: "
                "the node pools of a cluster need distinct names",
            )
        seen.setdefault(name, path)
    first_sharing = None
    for index, pool in enumerate(cluster.gpu_pools):
        path = f"gpuPools[{index}]"
        if pool.mig_profile and pool.product:
            try:
                mig_devices(pool.product, mig_config_name(pool.mig_profile))
            except ValueError as error:
                yield cluster.problem(f"{path}.migProfile", str(error))
        if pool.mig_profile and pool.time_slicing_replicas:
            yield cluster.problem(
                f"{path}.timeSlicingReplicas",
                "declare migProfile or timeSlicingReplicas, not both",
            )
        sharing = (
            mig_config_name(pool.mig_profile) if pool.mig_profile else "",
            pool.time_slicing_replicas,
        )
        if first_sharing is None:
            first_sharing = sharing
        elif sharing != first_sharing:
            field = "migProfile" if sharing[0] != first_sharing[0] else "timeSlicingReplicas"
            yield cluster.problem(
                f"{path}.{field}",
                f"differs from gpuPools[0]: the GPU pools of a cluster share one MIG and "
                f"time-slicing declaration (gpuPools[0]: {_sharing(first_sharing)})",
            )


def _sharing(sharing: tuple[str, int]) -> str:
    mig, replicas = sharing
    if mig:
        return f"migProfile {mig.removeprefix('all-')}"
    if replicas:
        return f"timeSlicingReplicas {replicas}"
    return "neither"


def _manifests(repository: Repository) -> Iterable[Problem]:
    clusters = [cluster_labels(cluster) for cluster in repository.clusters]
    addons = {m.name for m in repository.manifests if m.kind == "Addon"}
    known_addons = sorted(addons | set(BUILTIN_ADDONS))
    seen: dict[tuple[str, str], Manifest] = {}
    for manifest in repository.manifests:
        identity = (manifest.kind, manifest.name)
        if identity in seen:
            yield Problem(
                manifest.at("metadata.name"),
                "metadata.name",
                f"{manifest.kind} {json.dumps(manifest.name)} is already declared at "
                f"{seen[identity].at('metadata.name')}",
            )
            continue
        seen[identity] = manifest
        body = dict(manifest.body)
        try:
            if manifest.kind == "Addon":
                parse_addon(body)
            elif manifest.kind == "AddonProfile":
                profile = parse_profile(body)
                yield from _profile(manifest, profile, clusters, known_addons)
        except InvalidSpec as error:
            yield Problem(manifest.at("spec"), "spec", str(error))
        except (AttributeError, TypeError, ValueError) as error:
            # The parsers assume the shape of a body the API server has checked.
            yield Problem(manifest.at("spec"), "spec", f"malformed: {error}")


def _profile(
    manifest: Manifest, profile: Profile, clusters: list[dict[str, str]], known_addons: list[str]
) -> Iterable[Problem]:
    for index, entry in enumerate(profile.addons):
        if entry.name not in known_addons:
            path = f"spec.addons[{index}].name"
            yield Problem(
                manifest.at(path),
                path,
                f"no Addon {json.dumps(entry.name)} in addons/ nor built in; "
                f"{_hint(entry.name, known_addons)}known: {', '.join(known_addons)}",
            )
    try:
        selected = sum(1 for labels in clusters if matches(profile.selector, labels))
    except InvalidSelector as error:
        yield Problem(manifest.at("spec.clusterSelector"), "spec.clusterSelector", str(error))
        return
    if not selected:
        yield Problem(
            manifest.at("spec.clusterSelector"),
            "spec.clusterSelector",
            f"AddonProfile {json.dumps(manifest.name)} selects none of the "
            f"{len(clusters)} declared clusters",
        )


def _models(repository: Repository) -> Iterable[Problem]:
    # Without a models/ directory the models may be published some other way.
    if not (repository.root / "models").is_dir():
        return
    declared = sorted(m.name for m in repository.manifests if m.kind == "ModelArtifact")
    for cluster in repository.clusters:
        for index, model in enumerate(cluster.models):
            if model and model not in declared:
                yield cluster.problem(
                    f"models[{index}]",
                    f"no ModelArtifact {json.dumps(model)} in models/; "
                    f"{_hint(model, declared)}declared: {', '.join(declared) or 'none'}",
                )
