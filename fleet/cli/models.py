"""`fleet models`: every ModelArtifact against every datacenter, from the management cluster.

One row per model; one column per datacenter that any model needs: Replicated,
Copying n % (or Warming, for a pull-through registry), Pending, or Failed and why.
Exit 3 when a copy failed, as `fleet status` does for a cluster with problems.
"""

from __future__ import annotations

from typing import Any

import click

from fleet.api import GROUP, VERSION
from fleet.cli.console import Terminal, columns
from fleet.cli.options import ManagementAccess, management_options, read_management
from fleet.sources.management import collection
from fleet.sources.reader import Reader

JSON = dict[str, Any]
PROBLEMS = 3
REASON_SHOWN = 60


def cell(entry: JSON | None) -> str:
    """One datacenter's state of one model, short enough for a table."""
    if entry is None:
        return "-"
    phase = str(entry.get("phase") or "Pending")
    if phase in ("Copying", "Warming"):
        # The controller's progress message starts with the percentage: "45% (460 of …)".
        percent = str(entry.get("message") or "").split(" ", 1)[0]
        return f"{phase} {percent}" if percent.endswith("%") else phase
    if phase == "Failed":
        reason = str(entry.get("lastError") or "")
        return f"Failed: {reason[:REASON_SHOWN]}" + ("…" if len(reason) > REASON_SHOWN else "")
    return phase


def matrix(models: list[JSON]) -> tuple[list[str], list[tuple[str, ...]]]:
    """The datacenters (columns, by name) and a row per model: name, digest, size, the
    nodes holding it of those that should ("-" when it is not cached), cells."""
    datacenters = sorted(
        {
            str(e.get("name"))
            for m in models
            for e in (m.get("status") or {}).get("datacenters") or []
        }
    )
    rows = []
    for body in sorted(models, key=lambda m: (m["metadata"]["namespace"], m["metadata"]["name"])):
        status = body.get("status") or {}
        entries = {str(e.get("name")): e for e in status.get("datacenters") or []}
        digest = str(status.get("digest") or "")
        size = int(status.get("sizeBytes") or 0)
        rows.append(
            (
                f"{body['metadata']['namespace']}/{body['metadata']['name']}",
                digest.removeprefix("sha256:")[:12] or "-",
                f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size >> 20} MiB",
                str(status.get("cached") or "-"),
                *(cell(entries.get(dc)) for dc in datacenters),
            )
        )
    return datacenters, rows


def failed(models: list[JSON]) -> bool:
    return any(
        e.get("phase") == "Failed"
        for m in models
        for e in (m.get("status") or {}).get("datacenters") or []
    )


@click.command("models")
@management_options
@click.option("-n", "--namespace", default=None, help="Only this namespace (default: all).")
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_obj
def models(
    terminal: Terminal, management: ManagementAccess, namespace: str | None, output: str
) -> None:
    """Every ModelArtifact against every datacenter: Replicated, Copying n %, Failed: why.

    NODES is the node cache: nodes holding the model / nodes that should, over every
    selected cluster (see `kubectl get modelartifact NAME -o yaml`, status.clusters).
    """

    def look(reader: Reader) -> list[JSON]:
        return reader.list(collection(GROUP, VERSION, "modelartifacts", namespace)) or []

    found = read_management(terminal, management, look)
    if output == "json":
        terminal.data(
            {
                "models": [
                    {
                        "namespace": m["metadata"]["namespace"],
                        "name": m["metadata"]["name"],
                        "source": ((m.get("spec") or {}).get("source") or {}).get("reference"),
                        **{
                            k: v
                            for k, v in (m.get("status") or {}).items()
                            if k
                            in (
                                "digest",
                                "sizeBytes",
                                "replicated",
                                "datacenters",
                                "cached",
                                "clusters",
                            )
                        },
                    }
                    for m in found
                ]
            },
            "json",
        )
    elif not found:
        terminal.print("no ModelArtifacts")
    else:
        datacenters, rows = matrix(found)
        terminal.print(
            columns(
                [("MODEL", "DIGEST", "SIZE", "NODES", *(d.upper() for d in datacenters)), *rows]
            )
        )
    if failed(found):
        raise click.exceptions.Exit(PROBLEMS)
