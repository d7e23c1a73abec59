"""Options and clients shared by the commands that talk to a management cluster.

`--kubeconfig` and `--context` mean what they mean to kubectl, so that
`kubectl fleet …` takes the flags a plugin user types: $KUBECONFIG may list
several files, merged as kubectl merges them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from kubernetes import client as k8s

    from fleet.cli.console import Terminal
    from fleet.sources.kubeconfig import Endpoint
    from fleet.sources.reader import Reader

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ManagementAccess:
    """Which kubeconfig (files joined by os.pathsep) and context reach the management cluster."""

    kubeconfig: str | None = None
    context: str | None = None

    def endpoint(self) -> Endpoint:
        """What a read-only command needs (fleet.sources: starts without the kubernetes package)."""
        from fleet.sources.kubeconfig import load_endpoint

        return load_endpoint(self.kubeconfig, self.context)

    def client(self) -> k8s.ApiClient:
        """A full Kubernetes client, for commands that write.

        Imported here, not at the top: the package takes about half a second to
        import, which commands that only read (`fleet status`) do not pay.
        """
        from kubernetes import config as k8s_config

        return k8s_config.new_client_from_config(config_file=self.kubeconfig, context=self.context)


def management_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--kubeconfig` and `--context`, handed to the command as one `management` argument."""

    @functools.wraps(command)
    def with_access(*args: Any, kubeconfig: str | None, context: str | None, **kwargs: Any) -> Any:
        return command(*args, management=ManagementAccess(kubeconfig, context), **kwargs)

    with_access = click.option(
        "--context",
        envvar="FLEET_CONTEXT",
        help="Kubeconfig context of the management cluster (default: its current context).",
    )(with_access)
    return click.option(
        "--kubeconfig",
        envvar="KUBECONFIG",
        help="Kubeconfig of the management cluster; several files joined by ':' are merged "
        "as kubectl merges them (default: $KUBECONFIG, then ~/.kube/config).",
    )(with_access)


def read_management(
    terminal: Terminal,
    management: ManagementAccess,
    work: Callable[[Reader], T],
    *,
    code: int = 1,
    failed: str = "cannot read the management cluster: ",
) -> T:
    """`work` done with a light reader of the management cluster; a failure ends the
    command with `code` and the error after `failed`."""
    from fleet.errors import FleetError
    from fleet.sources.reader import Reader

    try:
        reader = Reader(management.endpoint())
        try:
            return work(reader)
        finally:
            reader.close()
    except (FleetError, OSError) as error:
        terminal.abort(f"{failed}{error}", code)
