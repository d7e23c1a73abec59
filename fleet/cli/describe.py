"""`fleet describe cluster|profile NAME`: one cluster's add-ons (or one profile's clusters)
as a tree, problems first, read from the management cluster only.

Like `clusterctl describe cluster`: a Cluster, then per profile its
AddonDeployment, its add-ons, and the objects their status names as problems.
`-o json|yaml` carries the same tree and every problem as fields (cluster,
profile, add-on, object, reason, message). Exit code 3 when there are
problems, as `fleet status`.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import click

from fleet.api import GROUP, LABEL_CLUSTER, LABEL_PROFILE, VERSION
from fleet.cli.console import Terminal
from fleet.cli.options import ManagementAccess, management_options, read_management
from fleet.describe import (
    AddonNode,
    ClusterView,
    DeploymentNode,
    ProfileView,
    cluster_view,
    is_problem,
    profile_view,
)
from fleet.sources import ReadError
from fleet.sources.management import cluster as get_cluster
from fleet.sources.management import collection
from fleet.sources.reader import Reader

JSON = dict[str, Any]
PROBLEMS = 3
PIPED_WIDTH = 10_000
MARKS = {"Ready": ("✓", "green"), "Paused": ("‖", "blue")}
PENDING_MARK = ("…", "yellow")
PROBLEM_MARK = ("✗", "red")
WAITING = ("Pending", "Applying", "Unknown", "Progressing")


def _mark(phase: str) -> tuple[str, str]:
    if phase in MARKS:
        return MARKS[phase]
    return PENDING_MARK if phase in WAITING else PROBLEM_MARK


def _label(phase: str, *parts: str) -> Any:
    from rich.text import Text

    symbol, style = _mark(phase)
    text = Text(f"{symbol} ", style=style)
    text.append(parts[0], style="bold")
    text.append(" · ")
    text.append(phase, style=style)
    for part in parts[1:]:
        if part:
            text.append(f" · {part}")
    return text


def _root(troubled: bool, title: str, facts: list[str]) -> Any:
    """The tree's top line: ✗ when anything below has a problem, then what it describes."""
    from rich.text import Text

    symbol, style = PROBLEM_MARK if troubled else MARKS["Ready"]
    text = Text(f"{symbol} ", style=style)
    text.append(title, style="bold")
    for fact in facts:
        if fact:
            text.append(f" · {fact}")
    return text


def _addon_branch(parent: Any, addon: AddonNode) -> None:
    facts = [f"revision {addon.revision}" if addon.revision else ""]
    facts.append(f"since {addon.last_change}" if addon.last_change else "")
    if addon.objects is not None and not addon.problems:
        facts.append(f"{addon.objects} objects")
    facts.append(addon.message if is_problem(addon.phase) and not addon.problems else "")
    branch = parent.add(_label(addon.phase, addon.name, *facts))
    for problem in addon.problems:
        branch.add(_label(problem.reason, problem.object, problem.message))


def _deployment_branch(parent: Any, deployment: DeploymentNode, title: str) -> None:
    message = deployment.message if not deployment.addons else ""
    branch = parent.add(_label(deployment.phase, title, f"{deployment.ready} ready", message))
    for addon in deployment.addons:
        _addon_branch(branch, addon)


def _print_tree(root: Any) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # piped: whole lines, for grep and scripts
        console = Console(highlight=False, width=PIPED_WIDTH)
    console.print(root)


def _cluster_tree(view: ClusterView) -> Any:
    from rich.tree import Tree

    gpus = "" if view.row.gpus is None else f"{view.row.gpus} GPUs"
    if gpus and view.gpu_nodes is not None:
        gpus += f" on {view.gpu_nodes} nodes"
    facts = [
        view.row.datacenter or "no datacenter",
        view.row.phase,
        f"Kubernetes {view.row.kubernetes_version}" if view.row.kubernetes_version else "",
        gpus,
    ]
    root = Tree(_root(bool(view.problems), f"Cluster {view.row.namespace}/{view.row.name}", facts))
    for problem in view.cluster_problems:
        root.add(_label(problem.reason, "cluster", problem.message))
    if not view.deployments:
        root.add("no profile selects this cluster")
    for deployment in view.deployments:
        _deployment_branch(root, deployment, f"profile {deployment.profile}")
    return root


def _profile_tree(view: ProfileView) -> Any:
    from rich.tree import Tree

    facts = [f"add-ons {', '.join(view.addons) or '-'}", f"{view.selected} clusters"]
    root = Tree(_root(bool(view.problems), f"AddonProfile {view.namespace}/{view.name}", facts))
    if not view.deployments:
        root.add("no cluster has this profile's add-ons yet")
    for deployment in view.deployments:
        _deployment_branch(root, deployment, f"cluster {deployment.cluster}")
    return root


def _named(reader: Reader, paths: list[str], what: str) -> JSON:
    for path in paths:
        found = reader.get(path).body
        if found is not None:
            return found
    raise ReadError(f"{what} not found")


def _deployments(reader: Reader, namespace: str, selector: str) -> list[JSON]:
    found = reader.list(collection(GROUP, VERSION, "addondeployments", namespace), selector)
    if found is None:
        raise ReadError(f"{reader.server} serves no AddonDeployments: install fleet first")
    return found


def _finish(terminal: Terminal, view: ClusterView | ProfileView, tree: Any, output: str) -> None:
    if output == "tree":
        _print_tree(tree)
    else:
        terminal.data(view.to_json(), output)
    if view.problems:
        raise click.exceptions.Exit(PROBLEMS)


namespace_option = click.option(
    "-n", "--namespace", default="default", show_default=True, help="Namespace of the object."
)
output_option = click.option(
    "-o",
    "--output",
    type=click.Choice(["tree", "json", "yaml"]),
    default="tree",
    show_default=True,
)


@click.group()
def describe() -> None:
    """One cluster's add-ons, or one profile's clusters, as a tree: problems first."""


@describe.command("cluster")
@management_options
@namespace_option
@output_option
@click.argument("name")
@click.pass_obj
def describe_cluster(
    terminal: Terminal, management: ManagementAccess, namespace: str, output: str, name: str
) -> None:
    """A Cluster → its profiles → their add-ons → the objects in trouble.

    Exit code 0 when nothing is wrong, 3 when something is (the tree says what).
    """

    def read(reader: Reader) -> tuple[JSON, list[JSON]]:
        cluster = get_cluster(reader, namespace, name)
        return cluster, _deployments(reader, namespace, f"{LABEL_CLUSTER}={name}")

    cluster, deployments = read_management(terminal, management, read)
    view = cluster_view(cluster, deployments)
    _finish(terminal, view, _cluster_tree(view) if output == "tree" else None, output)


@describe.command("profile")
@management_options
@namespace_option
@output_option
@click.argument("name")
@click.pass_obj
def describe_profile(
    terminal: Terminal, management: ManagementAccess, namespace: str, output: str, name: str
) -> None:
    """An AddonProfile → the clusters it selects → their add-ons → the objects in trouble.

    Exit code 0 when nothing is wrong, 3 when something is (the tree says what).
    """
    quoted = urllib.parse.quote(name, safe="")

    def read(reader: Reader) -> tuple[JSON, list[JSON]]:
        path = f"{collection(GROUP, VERSION, 'addonprofiles', namespace)}/{quoted}"
        profile = _named(reader, [path], f"AddonProfile {namespace}/{name}")
        return profile, _deployments(reader, namespace, f"{LABEL_PROFILE}={name}")

    profile, deployments = read_management(terminal, management, read)
    view = profile_view(profile, deployments)
    _finish(terminal, view, _profile_tree(view) if output == "tree" else None, output)
