"""`fleet controller`: run the controller against a management cluster."""

from __future__ import annotations

import importlib
import os
import resource
import shutil
from pathlib import Path

import click
from kubernetes import client as k8s

from fleet.api import install
from fleet.cli.console import Terminal
from fleet.cli.serving import api_client, serve_metrics
from fleet.controller import leader
from fleet.controller.management import Management
from fleet.controller.runtime import WORKERS, Runtime
from fleet.metrics import Metrics


def _management_client(kubeconfig: Path | None) -> k8s.ApiClient:
    if kubeconfig is not None:
        # kopf logs in through the same kubeconfig, found the usual way.
        os.environ["KUBECONFIG"] = str(kubeconfig)
    # One connection per worker, and a few for leader election and events.
    return api_client(kubeconfig, pool=WORKERS + 4)


def _raise_open_files_limit() -> None:
    """Raise the soft open-files limit to the hard one at start, as Go programs do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@click.command()
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="KUBECONFIG",
    help="Kubeconfig of the management cluster "
    "(default: in-cluster, then $KUBECONFIG / ~/.kube/config).",
)
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch only these namespaces (repeatable; default: all).",
)
@click.option(
    "--metrics-address",
    default="127.0.0.1:8080",
    show_default=True,
    help="Where /metrics is served (Prometheus).",
)
@click.option(
    "--health-address",
    default="127.0.0.1:8081",
    show_default=True,
    help="Where /healthz is served (answers only once this replica leads).",
)
@click.option(
    "--leader-election-namespace",
    default=install.DEFAULT_NAMESPACE,
    show_default=True,
    help=f"Namespace of the Lease {leader.LEASE_NAME} that replicas elect a leader with.",
)
@click.option(
    "--helm",
    envvar="FLEET_HELM",
    help="The helm binary for helm add-ons (default: helm on PATH).",
)
@click.pass_obj
def controller(
    terminal: Terminal,
    kubeconfig: Path | None,
    namespaces: tuple[str, ...],
    metrics_address: str,
    health_address: str,
    leader_election_namespace: str,
    helm: str | None,
) -> None:
    """Run the fleet controller (kopf) until interrupted.

    It reads Cluster API Clusters and fleet's Addons, AddonProfiles and
    Datacenters, and keeps one AddonDeployment per (profile, cluster) applied,
    healthy and free of drift on each workload cluster. Replicas elect a
    leader with a Lease; the others wait.
    """
    _raise_open_files_limit()
    metrics = Metrics()
    serve_metrics(terminal, metrics.registry, metrics_address, "127.0.0.1")
    api = _management_client(kubeconfig)
    me = leader.identity()
    lease = f"{leader_election_namespace}/{leader.LEASE_NAME}"
    terminal.progress(f"fleet controller {me}: waiting to lead (Lease {lease})")
    leader.wait_for_leadership(api, leader_election_namespace, me)
    runtime = Runtime(Management(api), metrics, helm=helm or shutil.which("helm"))
    import kopf  # here, not at the top: `fleet controller --help` should not pay for it

    importlib.import_module("fleet.controller.handlers")
    kopf.configure(quiet=not terminal.verbose, verbose=terminal.verbose)
    terminal.progress(
        f"fleet controller {me}: leading; metrics on http://{metrics_address}/metrics, "
        f"health on http://{health_address}/healthz"
    )
    try:
        kopf.run(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            memo=kopf.Memo(runtime=runtime),
            liveness_endpoint=f"http://{health_address}/healthz",
        )
    finally:
        leader.release(api, leader_election_namespace, me)
