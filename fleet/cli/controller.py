"""`fleet controller`: run the controller against a management cluster."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import click
import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from prometheus_client import start_http_server

from fleet.cli.console import Terminal
from fleet.controller.deployments import Controller
from fleet.controller.management import Management
from fleet.metrics import Metrics
from fleet.remote import RemoteClusters


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def _management_client(kubeconfig: Path | None) -> k8s.ApiClient:
    if kubeconfig is not None:
        # kopf logs in through the same kubeconfig, found the usual way.
        os.environ["KUBECONFIG"] = str(kubeconfig)
        return k8s_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        return k8s_config.new_client_from_config()
    return k8s.ApiClient()


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
    help="Where /healthz is served.",
)
@click.pass_obj
def controller(
    terminal: Terminal,
    kubeconfig: Path | None,
    namespaces: tuple[str, ...],
    metrics_address: str,
    health_address: str,
) -> None:
    """Run the fleet controller (kopf) until interrupted.

    It reads Cluster API Clusters and fleet's Addons, AddonProfiles and
    Datacenters, and keeps one AddonDeployment per (profile, cluster) applied,
    healthy and free of drift on each workload cluster.
    """
    metrics = Metrics()
    host, port = _address(metrics_address)
    try:
        start_http_server(port, host, registry=metrics.registry)
    except OSError as error:
        terminal.abort(f"cannot serve /metrics on {metrics_address}: {error.strerror}")
    api = _management_client(kubeconfig)
    state = Controller(Management(api), RemoteClusters(api), metrics)
    importlib.import_module("fleet.controller.handlers")
    kopf.configure(quiet=not terminal.verbose, verbose=terminal.verbose)
    terminal.progress(
        f"fleet controller: metrics on http://{metrics_address}/metrics, "
        f"health on http://{health_address}/healthz"
    )
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        memo=kopf.Memo(controller=state),
        liveness_endpoint=f"http://{health_address}/healthz",
    )
