"""`fleet agent`: the model cache on a node (`node`), or on a shared volume (`fill`)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import click
from kubernetes import client as k8s

from fleet.agent import gc
from fleet.agent.node import Agent, AgentMetrics, Settings, fill
from fleet.agent.store import Store
from fleet.cli.console import Terminal
from fleet.cli.serving import api_client, serve_metrics
from fleet.errors import FleetError

DEFAULT_ROOT = Path("/var/lib/fleet/model-cache")
ALL_ADDRESSES = "0.0.0.0"  # noqa: S104 (a pod serves on its own address)


def _bytes(text: str) -> int:
    """A size as Kubernetes writes quantities: 500Gi, 10G, 1048576."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "K": 10**3}
    units |= {"M": 10**6, "G": 10**9, "T": 10**12}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * units[suffix])
    return int(text)


class Size(click.ParamType):  # type: ignore[type-arg]
    name = "size"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        try:
            return value if isinstance(value, int) else _bytes(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a size (e.g. 500Gi, 10G, 1048576)", param, ctx)


def _common(function: click.decorators.FC) -> click.decorators.FC:
    options = [
        click.option(
            "--kubeconfig",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Kubeconfig of the workload cluster (default: in-cluster, then $KUBECONFIG).",
        ),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=DEFAULT_ROOT,
            show_default=True,
            help="The cache: blobs/, trees/, models/<name> (what pods mount).",
        ),
        click.option(
            "--cache-size",
            type=Size(),
            help="The cache's budget (e.g. 500Gi); default: the disk's free space.",
        ),
        click.option(
            "--parallel", default=4, show_default=True, help="Blobs pulled at once per model."
        ),
        click.option(
            "--metrics-address",
            default="",
            help="host:port to serve Prometheus /metrics on (default: none).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.group()
def agent() -> None:
    """Keep this node's model cache equal to the models assigned to its cluster."""


@agent.command()
@_common
@click.option(
    "--node",
    envvar="NODE_NAME",
    required=True,
    help="This node's name (the DaemonSet passes spec.nodeName as $NODE_NAME).",
)
@click.option("--high-watermark", default=0.85, show_default=True, help="Evict above this share.")
@click.option("--low-watermark", default=0.75, show_default=True, help="...down to this share.")
@click.option(
    "--keep-unassigned",
    default=0.0,
    show_default=True,
    help="Seconds an unassigned, unused model stays (0: removed at once).",
)
@click.option("--interval", default=30.0, show_default=True, help="Seconds between rounds at most.")
@click.pass_obj
def node(
    terminal: Terminal,
    kubeconfig: Path | None,
    cache_dir: Path,
    cache_size: int | None,
    parallel: int,
    metrics_address: str,
    node: str,
    high_watermark: float,
    low_watermark: float,
    keep_unassigned: float,
    interval: float,
) -> None:
    """Run the cache of one node until stopped (the model-cache DaemonSet's container).

    Pulls every model assigned to the cluster whose node selector this node matches,
    verified, into --cache-dir; labels the Node model.fleet.mlops.dev/<model>=ready
    and writes its progress into the annotation model.fleet.mlops.dev/status; removes
    models no longer assigned that no pod on the node uses.
    """
    try:
        watermarks = gc.Watermarks(high=high_watermark, low=low_watermark)
    except gc.BadWatermarks as error:
        terminal.abort(f"fleet agent: {error}", code=2)
    settings = Settings(parallel, cache_size, watermarks, keep_unassigned, interval)
    running = _agent(terminal, kubeconfig, cache_dir, metrics_address, node, settings)
    terminal.progress(f"fleet agent: node {node}, cache {cache_dir}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(running.run())


@agent.command("fill")
@_common
@click.pass_obj
def fill_command(
    terminal: Terminal,
    kubeconfig: Path | None,
    cache_dir: Path,
    cache_size: int | None,
    parallel: int,
    metrics_address: str,
) -> None:
    """Fill a shared volume with every assigned model once, then exit (a Job's container).

    The "model PVC" pattern: one Job fills a ReadWriteMany volume and pods mount it
    read-only with the same MODEL_PATH variables. What is already there is skipped.
    Exit 0 when every model is held, 1 when one could not be.
    """
    settings = Settings(parallel, cache_size)
    filler = _agent(terminal, kubeconfig, cache_dir, metrics_address, "", settings)
    held = asyncio.run(fill(filler))
    for name, state in sorted(filler.states.items()):
        message = state.get("message") or f"{state.get('receivedBytes', 0)} bytes received"
        terminal.progress(f"{name} {state['digest']}: {state['phase']} ({message})")
    if not held:
        raise click.exceptions.Exit(1)


def _agent(
    terminal: Terminal,
    kubeconfig: Path | None,
    cache_dir: Path,
    metrics_address: str,
    node: str,
    settings: Settings,
) -> Agent:
    """The agent of a node (`node`) or of a shared volume (""), its metrics served."""
    try:
        store = Store(cache_dir)
    except (FleetError, OSError) as error:
        terminal.abort(f"fleet agent: {error}", code=2)
    metrics = AgentMetrics()
    serve_metrics(terminal, metrics.registry, metrics_address, ALL_ADDRESSES)
    return Agent(k8s.CoreV1Api(api_client(kubeconfig)), store, node, settings, metrics)
