"""`fleet status`: the whole fleet in one table, read from the management cluster only.

It reads one LIST of Clusters, one LIST of AddonDeployments and the
controller's Lease, through fleet.sources rather than the Kubernetes client,
so that it starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator

import click

from fleet.api.install import DEFAULT_NAMESPACE
from fleet.cli.console import Terminal, columns
from fleet.cli.options import ManagementAccess, management_options, read_management
from fleet.errors import FleetError
from fleet.fleetview import ClusterRow, Heartbeat, heartbeat, rows, unread_heartbeat
from fleet.progress import progress
from fleet.sources.management import LEASE_NAME, Snapshot, deployments, read_fleet
from fleet.sources.reader import PAGE, Reader

PROBLEMS = 3
INTERRUPTED = 130


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
                row.gpu_offer,
                f"{row.addons_ready}/{row.addons_total}",
                "; ".join(row.problems) or "-",
            )
        )
    return table


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while the lists are read, joined and printed.

    A thousand Clusters decode into millions of small objects with no cycles
    among them; the collector would walk them over and over as they pile up,
    doubling the CPU time of the whole read. Reference counting frees them
    when `report` returns, before the collector resumes and could walk them
    once more.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def controller_heartbeat(snapshot: Snapshot, controller_namespace: str) -> Heartbeat:
    where = f"{controller_namespace}/{LEASE_NAME}"
    if snapshot.lease_error is not None:
        return unread_heartbeat(where, snapshot.lease_error)
    return heartbeat(snapshot.lease, snapshot.time, where)


def exit_code(found: list[ClusterRow], beat: Heartbeat, deployments: int) -> int:
    """3 when a cluster has problems, or when add-ons exist and no controller looks after them."""
    if any(row.problems for row in found) or (beat.healthy is False and deployments > 0):
        return PROBLEMS
    return 0


@click.command()
@management_options
@click.option("-n", "--namespace", help="Only the Clusters of this namespace (default: all).")
@click.option(
    "-A", "--all-namespaces", is_flag=True, help="Clusters of every namespace (the default)."
)
@click.option(
    "--controller-namespace",
    default=DEFAULT_NAMESPACE,
    show_default=True,
    help=f"Namespace of the controller's Lease {LEASE_NAME} (its heartbeat).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=0),
    default=PAGE,
    show_default=True,
    help="Items per LIST request; 0 reads each list in one request, which the API server "
    "answers from its cache (faster at a thousand clusters, one large response).",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
)
@click.option(
    "-w",
    "--watch",
    is_flag=True,
    help="After the table, follow the fleet converging until interrupted: a bar on a "
    "terminal, a line per change when piped (on stderr).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.5),
    default=2.0,
    show_default=True,
    help="Seconds between looks with --watch.",
)
@click.pass_obj
def status(
    terminal: Terminal,
    management: ManagementAccess,
    namespace: str | None,
    all_namespaces: bool,
    controller_namespace: str,
    chunk_size: int,
    output: str,
    watch: bool,
    interval: float,
) -> None:
    """One line per cluster: datacenter, phase, version, GPUs, add-ons ready, problems.

    Exit code 0 when every cluster is free of problems, 3 when some have problems
    (or when there are add-ons and the controller has stopped reporting).
    """
    if namespace and all_namespaces:
        raise click.UsageError("-n/--namespace and -A/--all-namespaces exclude each other")
    with cyclic_gc_paused():
        code = report(terminal, management, namespace, controller_namespace, chunk_size, output)
    if watch:
        follow(terminal, management, namespace, interval)
    if code:
        raise click.exceptions.Exit(code)


def report(
    terminal: Terminal,
    management: ManagementAccess,
    namespace: str | None,
    controller_namespace: str,
    chunk_size: int,
    output: str,
) -> int:
    """Read, print, and return the exit code."""
    try:
        reader = Reader(management.endpoint(), chunk_size=chunk_size)
        try:
            snapshot = read_fleet(reader, namespace, controller_namespace)
        finally:
            reader.close()
    except (FleetError, OSError) as error:
        terminal.abort(f"cannot read the management cluster: {error}")
    found = rows(snapshot.clusters, snapshot.deployments)
    beat = controller_heartbeat(snapshot, controller_namespace)
    if beat.note:
        terminal.warn(beat.note)
    if output != "table":
        terminal.data(
            {"clusters": [row.to_json() for row in found], "controller": beat.to_json()}, output
        )
    else:
        terminal.print(columns(status_table(found, namespaced=namespace is None)))
    return exit_code(found, beat, len(snapshot.deployments))


def follow(
    terminal: Terminal, management: ManagementAccess, namespace: str | None, interval: float
) -> None:
    """Every AddonDeployment's convergence, looked at every `interval` s, until Ctrl-C."""
    subject = f"namespace {namespace}" if namespace else "fleet"

    def watch(reader: Reader) -> None:
        with terminal.bar(subject) as show:
            while True:
                now = progress(deployments(reader, namespace))
                show(now.ready, now.total, now.line())
                time.sleep(interval)

    try:
        read_management(terminal, management, watch)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(INTERRUPTED) from None
