"""`fleet status`: the whole fleet in one table, read from the management cluster only."""

from __future__ import annotations

from pathlib import Path

import click
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from fleet.cli.console import Terminal, columns
from fleet.cli.options import kubeconfig_option, management_client
from fleet.controller.management import Management
from fleet.fleetview import ClusterRow, rows


def status_table(found: list[ClusterRow], namespaced: bool) -> list[tuple[str, ...]]:
    header = ("CLUSTER", "DATACENTER", "PHASE", "VERSION", "GPUS", "ADDONS", "PROBLEMS")
    table = [(("NAMESPACE",) if namespaced else ()) + header]
    for row in found:
        table.append(
            ((row.namespace,) if namespaced else ())
            + (
                row.name,
                row.datacenter or "-",
                row.phase,
                row.kubernetes_version or "-",
                "-" if row.gpus is None else str(row.gpus),
                f"{row.addons_ready}/{row.addons_total}",
                "; ".join(row.problems) or "-",
            )
        )
    return table


@click.command()
@kubeconfig_option
@click.option("-n", "--namespace", help="Only the Clusters of this namespace (default: all).")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
)
@click.pass_obj
def status(terminal: Terminal, kubeconfig: Path | None, namespace: str | None, output: str) -> None:
    """One line per cluster: datacenter, phase, version, GPUs, add-ons ready, problems.

    Exit code 0 when every cluster is free of problems, 3 when some have problems.
    """
    try:
        api = management_client(kubeconfig)
        management = Management(api)
        found = rows(management.clusters(namespace), management.list("addondeployments", namespace))
    except (ApiException, HTTPError, k8s_config.ConfigException, OSError) as error:
        terminal.abort(f"cannot read the management cluster: {error}")
    if output != "table":
        terminal.data({"clusters": [row.to_json() for row in found]}, output)
    else:
        terminal.print(columns(status_table(found, namespaced=namespace is None)))
    if any(row.problems for row in found):
        raise click.exceptions.Exit(3)
