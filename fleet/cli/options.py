"""Options and clients shared by the commands that talk to a management cluster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from kubernetes import client as k8s

kubeconfig_option = click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="KUBECONFIG",
    help="Kubeconfig of the management cluster (default: $KUBECONFIG, then ~/.kube/config).",
)


def management_client(kubeconfig: Path | None) -> k8s.ApiClient:
    """A full Kubernetes client, for commands that write.

    Imported here, not at the top: the package takes about half a second to
    import, which commands that only read (`fleet status`) do not pay.
    """
    from kubernetes import config as k8s_config

    return k8s_config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)
