"""`fleet render ADDON --cluster NAME` and `fleet diff PROFILE`: see before applying.

Both compute what the controller would apply to a cluster (fleet.preview):
`render` prints it, with `--show-context` the variables the templates see;
`diff` sends it to the cluster as a server-side dry run and prints what would
change, as `argocd app diff` does, with its exit codes: 0 no difference, 1
differences, 2 an error.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import yaml

from fleet.api import GROUP, LABEL_PROFILE, VERSION
from fleet.api.models import Addon, AddonEntry, parse_profile
from fleet.cli.console import Terminal, print_diff
from fleet.cli.options import ManagementAccess, management_options, read_management
from fleet.diffing import ObjectDiff, differences
from fleet.errors import FleetError
from fleet.plan import Record
from fleet.preview import (
    Charts,
    Target,
    profile_values,
    read_addon,
    read_target,
    rendered,
)
from fleet.sources.management import collection
from fleet.sources.reader import Reader

JSON = dict[str, Any]
DIFFERENT, BROKEN = 1, 2

helm_option = click.option(
    "--helm",
    envvar="FLEET_HELM",
    help="helm binary for chart add-ons (default: helm on PATH).",
)
namespace_option = click.option(
    "-n", "--namespace", default="default", show_default=True, help="Namespace of the Cluster."
)


@click.command()
@management_options
@namespace_option
@click.option("--cluster", required=True, help="The Cluster to render for.")
@click.option(
    "--profile",
    help="Take the add-on's values from this profile (default: the one on the cluster).",
)
@click.option(
    "--show-context",
    is_flag=True,
    help="Print the variables the templates see (cluster, datacenter, gpu, values, addon) first.",
)
@helm_option
@click.argument("addon")
@click.pass_obj
def render(
    terminal: Terminal,
    management: ManagementAccess,
    namespace: str,
    cluster: str,
    profile: str | None,
    show_context: bool,
    helm: str | None,
    addon: str,
) -> None:
    """Exactly the objects ADDON would apply to a cluster, as YAML documents.

    Rendered as the controller renders them: the cluster's labels, topology and
    datacenter, its live GPU inventory, the profile's values, and the ApplySet
    labels the controller adds. Exit 2 on an error.
    """

    def work(reader: Reader) -> tuple[JSON, list[JSON]]:
        target = read_target(reader, namespace, cluster)
        try:
            found = read_addon(reader, namespace, addon)
            profile_name, values = profile_values(reader, namespace, target, addon, profile)
            with tempfile.TemporaryDirectory(prefix="fleet-charts-") as cache:
                charts = Charts(reader, helm, Path(cache))
                objects = rendered(target, found, values, profile_name, charts)
            return target.context.variables(found, values), objects
        finally:
            target.client.close()

    variables, objects = read_management(terminal, management, work, code=BROKEN, failed="")
    documents: list[Any] = [variables] if show_context else []
    if show_context:
        sys.stdout.write("# the variables the templates see\n")
    sys.stdout.write(yaml.safe_dump_all([*documents, *objects], sort_keys=False))


@click.command()
@management_options
@namespace_option
@click.option(
    "--cluster", "only", help="Only this cluster (default: every cluster of the profile)."
)
@helm_option
@click.argument("profile")
@click.pass_obj
def diff(
    terminal: Terminal,
    management: ManagementAccess,
    namespace: str,
    only: str | None,
    helm: str | None,
    profile: str,
) -> None:
    """What applying PROFILE now would change on its clusters: a server-side dry run.

    Every object the profile's add-ons render is sent to its cluster with
    dryRun=All and compared with what is there (managedFields, status and
    server-set metadata left out); objects the add-ons no longer render are
    shown as deletions. Exit 0 no difference, 1 differences, 2 an error.
    """

    def work(reader: Reader) -> list[ObjectDiff]:
        body = reader.get(
            f"{collection(GROUP, VERSION, 'addonprofiles', namespace)}/{profile}"
        ).body
        if body is None:
            raise FleetError(f"AddonProfile {namespace}/{profile} not found")
        entries = parse_profile(body).addons
        deployments = (
            reader.list(
                collection(GROUP, VERSION, "addondeployments", namespace),
                f"{LABEL_PROFILE}={profile}",
            )
            or []
        )
        clusters = sorted(d["spec"]["cluster"] for d in deployments)
        if only:
            if only not in clusters:
                raise FleetError(f"profile {profile} has no deployment on cluster {only}")
            clusters = [only]
        statuses = {d["spec"]["cluster"]: d.get("status") or {} for d in deployments}
        addons = {e.name: read_addon(reader, namespace, e.name) for e in entries}
        found: list[ObjectDiff] = []
        with tempfile.TemporaryDirectory(prefix="fleet-charts-") as cache:
            charts = Charts(reader, helm, Path(cache))
            for name in clusters:
                target = read_target(reader, namespace, name)
                try:
                    status = statuses[name]
                    found += _cluster_diffs(target, entries, addons, profile, status, charts)
                finally:
                    target.client.close()
        return found

    found = read_management(terminal, management, work, code=BROKEN, failed="")
    for object_diff in found:
        heading = f"=== {object_diff.cluster} / {object_diff.addon}: {object_diff.key}"
        print_diff(f"{heading} ({object_diff.change})", "bold", object_diff.lines)
    if found:
        raise click.exceptions.Exit(DIFFERENT)


def _cluster_diffs(
    target: Target,
    entries: tuple[AddonEntry, ...],
    addons: dict[str, Addon],
    profile: str,
    status: JSON,
    charts: Charts,
) -> Iterator[ObjectDiff]:
    applysets = {
        a["name"]: a.get("applyset") or {} for a in status.get("addons") or [] if a.get("name")
    }
    for entry in entries:
        objects = rendered(target, addons[entry.name], entry.values, profile, charts)
        record = Record.from_json(applysets.get(entry.name)).covering(objects)
        yield from differences(target.client, target.cluster.name, entry.name, objects, record)
