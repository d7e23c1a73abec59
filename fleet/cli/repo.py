"""`fleet render | validate | diff | apply [DIR]`: a fleet repository (fleet.yaml,
clusters/, addons/, profiles/, models/, blueprints/) to Cluster API manifests on the
management cluster.

Exit codes: 0 ok, 1 the repository has errors (each printed as
`file:line:column: field: message`) or the server refused an object, 2 bad usage, 3 the
management cluster cannot be reached. `-o json` gives the same as data.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fleet.cli.console import Terminal, print_diff
from fleet.cli.options import ManagementAccess, management_options

JSON = dict[str, Any]
INVALID, USAGE, UNREACHABLE = 1, 2, 3
NAMESPACED = ("Addon", "AddonProfile", "ModelArtifact")
# Applied in this order: where things live, then what selects clusters, then the clusters.
ORDER = ("Namespace", "Secret", "Datacenter", "Addon", "ModelArtifact", "AddonProfile", "Cluster")

directory_argument = click.argument(
    "directory",
    required=False,
    default=".",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)


def _problems_out(terminal: Terminal, problems: list[Any], output: str) -> None:
    """Every problem, then exit 1."""
    if output == "json":
        terminal.data({"valid": False, "problems": [p.to_json() for p in problems]}, "json")
    else:
        for problem in problems:
            terminal.err.print(str(problem), markup=False, highlight=False)
        terminal.err.print(f"{len(problems)} problem(s)", markup=False, style="red")
    raise click.exceptions.Exit(INVALID)


def load(terminal: Terminal, directory: Path, output: str) -> tuple[Any, JSON, list[JSON]]:
    """The repository, what it renders to, and every object to publish; exit 1 with every
    problem when there is one."""
    from fleet.repo.load import load_repository
    from fleet.repo.render import render_repository

    repository, problems = load_repository(directory)
    rendered: JSON = {}
    if repository is not None:
        rendered, more = render_repository(repository)
        problems = [*problems, *more]
    if problems or repository is None:
        _problems_out(terminal, problems, output)
    return repository, rendered, objects_of(repository, rendered)


def objects_of(repository: Any, rendered: JSON) -> list[JSON]:
    """Everything `apply` publishes, in the order it is applied: the fleet's namespace, the
    datacenters, the repository's add-ons, models and profiles, then the clusters."""
    namespace = repository.fleet.namespace
    made: list[JSON] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
    for objects in rendered.values():
        made.extend(objects)
    for manifest in repository.manifests:
        body = dict(manifest.body)
        meta = dict(body.get("metadata") or {})
        if body.get("kind") in NAMESPACED:
            meta.setdefault("namespace", namespace)
        made.append({**body, "metadata": meta})
    rank = {kind: index for index, kind in enumerate(ORDER)}
    return sorted(made, key=lambda o: rank.get(o.get("kind", ""), len(ORDER)))


def _publisher(terminal: Terminal, management: ManagementAccess, namespace: str) -> Any:
    """The management cluster, or exit 3 naming why it cannot be reached."""
    from kubernetes import config as k8s_config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic import DynamicClient
    from urllib3.exceptions import HTTPError

    from fleet.repo.publish import Publisher

    try:
        return Publisher(DynamicClient(management.client()), namespace)
    except (k8s_config.ConfigException, ApiException, HTTPError, OSError) as error:
        terminal.abort(f"cannot reach the management cluster: {error}", UNREACHABLE)


def _reaching(terminal: Terminal, work: Callable[[], Any]) -> Any:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return work()
    except HTTPError as error:
        terminal.abort(f"cannot reach the management cluster: {error}", UNREACHABLE)
    except ApiException as error:
        if error.status in (401, 403):
            terminal.abort(f"the management cluster refused: {error.reason}", UNREACHABLE)
        raise


output_option = click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)


@click.command()
@directory_argument
@click.option(
    "-o",
    "--output",
    "output",
    default="",
    metavar="DIR|yaml|json",
    help="A directory to write one file per cluster into (made if missing), or yaml / json "
    "to print every object (default: yaml to stdout).",
)
@click.pass_obj
def render(terminal: Terminal, directory: Path, output: str) -> None:
    """The Cluster API manifests of a fleet repository (DIR, default .).

    One file per cluster (clusters/<name>.yaml) and datacenters.yaml, in a stable
    order, byte-identical on every run: plain YAML Argo CD or Flux can sync as it is.
    Nothing is read from or sent to a cluster.
    """
    from fleet.repo.render import manifest_files

    fmt = output if output in ("yaml", "json") else "text"
    _, rendered, _ = load(terminal, directory, "json" if fmt == "json" else "text")
    files = manifest_files(rendered)
    if output in ("", "yaml"):
        sys.stdout.write("".join(f"# {name}\n{text}" for name, text in sorted(files.items())))
    elif output == "json":
        objects = [o for objects in rendered.values() for o in objects]
        terminal.data({"apiVersion": "v1", "kind": "List", "items": objects}, "json")
    else:
        target = Path(output)
        for name, text in sorted(files.items()):
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
        stale = stale_renders(target, set(files))
        for path in stale:
            path.unlink()
        gone = f"; removed {len(stale)} of a cluster no longer declared" if stale else ""
        terminal.progress(f"wrote {len(files)} files into {target}{gone}")


def stale_renders(target: Path, written: set[str]) -> list[Path]:
    """Files of `target/clusters/` a render made for a cluster no longer declared: a tool
    syncing the directory must not keep them. Only files this command wrote (they carry
    the annotation naming their source) are taken; anything else there is left alone."""
    from fleet.repo.render import SOURCE_ANNOTATION

    return [
        path
        for path in sorted((target / "clusters").glob("*.yaml"))
        if path.relative_to(target).as_posix() not in written
        and f"{SOURCE_ANNOTATION}: clusters/" in path.read_text(errors="replace")
    ]


@click.command()
@management_options
@directory_argument
@click.option(
    "--offline",
    is_flag=True,
    help="Do not ask the management cluster for a server-side dry run.",
)
@output_option
@click.pass_obj
def validate(
    terminal: Terminal,
    management: ManagementAccess,
    directory: Path,
    offline: bool,
    output: str,
) -> None:
    """Every error of a fleet repository, not just the first.

    DIR is the repository (default .). Each error is printed as
    file:line:column: field: message: types, unknown fields, unknown datacenters,
    duplicate names, GPU pools their product cannot serve, profiles that select
    nothing, blueprint errors. Then, unless --offline, every object is sent to the
    management cluster as a server-side dry run, so its schemas check the output too.
    Exit 0 valid, 1 errors, 3 the management cluster cannot be reached.
    """
    repository, _, objects = load(terminal, directory, output)
    refused: list[Any] = []
    if not offline:
        publisher = _publisher(terminal, management, repository.fleet.namespace)
        _, refused = _reaching(
            terminal, lambda: publisher.changes(objects, prune=False, compare=False)
        )
    if refused:
        _refusals_out(terminal, refused, output)
    clusters = len(repository.clusters)
    if output == "json":
        terminal.data({"valid": True, "clusters": clusters, "dryRun": not offline}, "json")
    else:
        checked = "offline" if offline else "and dry-run on the management cluster"
        terminal.print(f"valid: {clusters} clusters ({checked})")


def _refusals_out(terminal: Terminal, refused: list[Any], output: str) -> None:
    if output == "json":
        terminal.data(
            {"valid": False, "refused": [{"object": str(r), "status": r.status} for r in refused]},
            "json",
        )
    else:
        for found in refused:
            terminal.err.print(f"refused: {found}", markup=False, highlight=False)
    raise click.exceptions.Exit(INVALID)


def _show(changes: list[Any], *, diff: bool) -> None:
    styles = {"added": "green", "changed": "yellow", "removed": "red", "protected": "red"}
    for change in changes:
        if change.change == "unchanged":
            continue
        label = "removal refused: deletion-protection" if change.change == "protected" else ""
        print_diff(
            f"{change.change}: {change.what}{'  (' + label + ')' if label else ''}",
            f"bold {styles[change.change]}",
            change.lines if diff and change.change == "changed" else (),
        )


def _counts(changes: list[Any]) -> JSON:
    return {
        kind: sum(1 for c in changes if c.change == kind)
        for kind in ("added", "changed", "unchanged", "removed", "protected")
    }


@click.command()
@management_options
@directory_argument
@click.option("--prune", is_flag=True, help="Also show the Clusters apply --prune would delete.")
@output_option
@click.pass_obj
def diff(
    terminal: Terminal,
    management: ManagementAccess,
    directory: Path,
    prune: bool,
    output: str,
) -> None:
    """What `fleet apply` would change on the management cluster (DIR, default .).

    Added and removed objects by name, changed ones with a unified diff of a
    server-side dry run against what is there (server-set fields left out).
    """
    repository, _, objects = load(terminal, directory, output)
    publisher = _publisher(terminal, management, repository.fleet.namespace)
    changes, refused = _reaching(terminal, lambda: publisher.changes(objects, prune=prune))
    if refused:
        _refusals_out(terminal, refused, output)
    if output == "json":
        terminal.data(
            {
                "counts": _counts(changes),
                "changes": [c.to_json() for c in changes if c.change != "unchanged"],
            },
            "json",
        )
        return
    _show(changes, diff=True)
    counts = _counts(changes)
    terminal.print(
        f"{counts['added']} to add, {counts['changed']} to change, {counts['removed']} to "
        f"remove, {counts['unchanged']} unchanged"
        + (f", {counts['protected']} protected from removal" if counts["protected"] else "")
    )


@click.command()
@management_options
@directory_argument
@click.option(
    "--prune",
    is_flag=True,
    help="Delete Clusters this tool made whose files are gone (never one labelled "
    "fleet.mlops.dev/deletion-protection=true).",
)
@click.option("--yes", is_flag=True, help="Delete without asking.")
@output_option
@click.pass_obj
def apply(
    terminal: Terminal,
    management: ManagementAccess,
    directory: Path,
    prune: bool,
    yes: bool,
    output: str,
) -> None:
    """Publish a fleet repository to the management cluster.

    DIR is the repository (default .). It is validated first: nothing is applied when
    anything is wrong. Then the datacenters, the repository's add-ons, models and
    profiles and the Clusters are server-side applied as field manager fleet-cli.
    With --prune, Clusters it made whose files are gone are listed and deleted after
    a confirmation (or --yes); a Cluster labelled
    fleet.mlops.dev/deletion-protection=true is never deleted: apply stops instead.
    """
    repository, _, objects = load(terminal, directory, output)
    publisher = _publisher(terminal, management, repository.fleet.namespace)
    changes, refused = _reaching(terminal, lambda: publisher.changes(objects, prune=prune))
    if refused:
        _refusals_out(terminal, refused, output)
    protected = [c for c in changes if c.change == "protected"]
    if protected:
        names = ", ".join(c.name for c in protected)
        terminal.abort(
            f"will not delete {names}: labelled fleet.mlops.dev/deletion-protection=true "
            "(remove the label first, or keep its file); nothing was applied",
            INVALID,
        )
    removals = [c for c in changes if c.change == "removed"]
    if removals and not yes:
        if not sys.stdin.isatty():
            terminal.abort(
                f"--prune would delete {len(removals)} Cluster(s) "
                f"({', '.join(c.name for c in removals)}): confirm with --yes; nothing was applied",
                USAGE,
            )
        for change in removals:
            terminal.err.print(f"will delete {change.what}", markup=False)
        if not click.confirm(f"Delete {len(removals)} Cluster(s)?", err=True):
            terminal.abort("nothing was applied", USAGE)
    if output == "text":
        _show(changes, diff=False)
    failed = _reaching(terminal, lambda: publisher.apply(changes))
    counts = _counts(changes)
    if output == "json":
        terminal.data(
            {
                "counts": counts,
                "changes": [c.to_json() for c in changes if c.change != "unchanged"],
                "refused": [str(r) for r in failed],
            },
            "json",
        )
    else:
        for found in failed:
            terminal.err.print(f"refused: {found}", markup=False, highlight=False)
        terminal.print(
            f"applied: {counts['added']} added, {counts['changed']} changed, "
            f"{counts['removed']} removed, {counts['unchanged']} unchanged"
        )
    if failed:
        raise click.exceptions.Exit(INVALID)
