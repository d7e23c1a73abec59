"""`fleet install`: CRDs, RBAC and the controller Deployment onto a management cluster."""

from __future__ import annotations

import time

import click
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from urllib3.exceptions import HTTPError

from fleet.api import FIELD_MANAGER
from fleet.api.install import DEFAULT_IMAGE, DEFAULT_NAMESPACE, manifests
from fleet.cli.console import Terminal
from fleet.cli.options import ManagementAccess, management_options
from fleet.health import health
from fleet.order import apply_sorted

ESTABLISH_SECONDS = 30.0


@click.command()
@management_options
@click.option(
    "--namespace", default=DEFAULT_NAMESPACE, show_default=True, help="Namespace of the controller."
)
@click.option("--image", default=DEFAULT_IMAGE, show_default=True, help="Controller image.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml", "json"]),
    help="Print the manifests instead of applying them.",
)
@click.pass_obj
def install(
    terminal: Terminal, management: ManagementAccess, namespace: str, image: str, output: str | None
) -> None:
    """Install (or upgrade) fleet on a management cluster with server-side apply.

    Applies fleet's CRDs, a least-privilege ClusterRole for the controller's
    ServiceAccount, and the controller Deployment. Run it again to upgrade.
    """
    objects = apply_sorted(manifests(namespace, image))
    if output:
        if output == "json":
            terminal.data({"apiVersion": "v1", "kind": "List", "items": objects}, "json")
        else:
            for body in objects:
                terminal.print("---")
                terminal.data(body, "yaml")
        return
    try:
        api = management.client()
        dynamic = DynamicClient(api)
        for body in objects:
            resource = dynamic.resources.get(api_version=body["apiVersion"], kind=body["kind"])
            meta = body["metadata"]
            dynamic.server_side_apply(
                resource,
                body=body,
                namespace=meta.get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
            terminal.progress(f"applied {body['kind']} {meta['name']}")
            if body["kind"] == "CustomResourceDefinition":
                _wait_established(dynamic, meta["name"])
    except (ApiException, HTTPError, k8s_config.ConfigException, OSError) as error:
        terminal.abort(f"install failed: {error}")
    terminal.print(f"fleet installed in namespace {namespace} ({len(objects)} objects)")


def _wait_established(dynamic: DynamicClient, name: str) -> None:
    resource = dynamic.resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    deadline = time.monotonic() + ESTABLISH_SECONDS
    while not health(resource.get(name=name).to_dict()).ready:
        if time.monotonic() > deadline:
            raise OSError(f"CRD {name} not Established after {ESTABLISH_SECONDS:.0f}s")
        time.sleep(0.2)
