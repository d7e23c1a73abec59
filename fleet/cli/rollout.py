"""`fleet rollout status|pause|resume|undo|history PROFILE`, as `kubectl rollout` for a profile.

The controller alone writes a rollout's state (the profile's `status.rollout`);
these commands read it, and ask for a change by annotating the profile: pause
while `rollout.fleet.mlops.dev/paused` is there; resume and undo name the
revision they are for, so a request is taken once and never applies to a later
rollout. Exit codes: 0 ok, 1 the request cannot be made (no rollout, nothing to
undo, unreadable), 3 `status` finds the rollout Halted.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import click

from fleet.api import (
    GROUP,
    LABEL_PROFILE,
    ROLLOUT_PAUSE_ANNOTATION,
    ROLLOUT_RESUME_ANNOTATION,
    ROLLOUT_UNDO_ANNOTATION,
    VERSION,
)
from fleet.cli.console import Terminal, columns
from fleet.cli.options import ManagementAccess, management_options, read_management
from fleet.revisions import parse_snapshot
from fleet.rolloutview import (
    SETTLED,
    clusters,
    history_json,
    history_rows,
    rolls_out,
    status_lines,
)
from fleet.sources import ReadError
from fleet.sources.management import asked_revision, collection
from fleet.sources.reader import Reader

JSON = dict[str, Any]
HALTED = 3

namespace_option = click.option(
    "-n", "--namespace", default="default", show_default=True, help="The profile's namespace."
)
output_option = click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)


@click.group()
def rollout() -> None:
    """See and steer the progressive rollout of a profile's revisions (spec.rollout)."""


def _profile(reader: Reader, namespace: str, name: str) -> JSON:
    path = f"{collection(GROUP, VERSION, 'addonprofiles', namespace)}/{urllib.parse.quote(name)}"
    body = reader.get(path).body
    if body is None:
        raise ReadError(f"AddonProfile {namespace}/{name} not found")
    return body


def _deployments(reader: Reader, namespace: str, name: str) -> list[JSON]:
    path = collection(GROUP, VERSION, "addondeployments", namespace)
    return reader.list(path, f"{LABEL_PROFILE}={name}") or []


@rollout.command()
@management_options
@namespace_option
@output_option
@click.option("-w", "--watch", is_flag=True, help="Show it again as it changes, until settled.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds between looks with --watch.",
)
@click.argument("profile")
@click.pass_obj
def status(
    terminal: Terminal,
    management: ManagementAccess,
    namespace: str,
    output: str,
    watch: bool,
    interval: float,
    profile: str,
) -> None:
    """Where PROFILE's rollout stands: phase, wave, counts, the failing cluster, a bar
    per wave; exit 3 when it is Halted. With --watch, until Complete or Halted."""

    def look(reader: Reader) -> str | None:
        """Show it once; the phase to go by: None for a profile without a rollout,
        "Planning" while the controller has not planned what the profile asks for."""
        body = _profile(reader, namespace, profile)
        views = clusters(_deployments(reader, namespace, profile))
        record = (body.get("status") or {}).get("rollout") or {}
        asked = asked_revision(reader, body) if rolls_out(body) else ""
        planned = (record.get("state") or {}).get("requested") == asked
        if output == "json":
            shown = {"profile": profile, "namespace": namespace, "rollout": record}
            shown["clusters"] = {n: v.to_json() for n, v in views.items()}
            terminal.data(shown | ({} if planned else {"notPlannedYet": asked}), "json")
        else:
            lines, rows = status_lines(body, views)
            if asked and not planned:
                lines.insert(1, f"the controller has not planned revision {asked} yet")
            text = "\n".join([*lines, *(["", *columns(rows).splitlines()] if rows else [])])
            terminal.print(text)
        if not asked:
            return None
        return str(record.get("phase")) if planned else "Planning"

    def watching(reader: Reader) -> str | None:
        phase = look(reader)
        while watch and phase is not None and phase not in SETTLED:
            time.sleep(interval)
            terminal.print()
            phase = look(reader)
        return phase

    if read_management(terminal, management, watching) == "Halted":
        raise click.exceptions.Exit(HALTED)


@rollout.command()
@management_options
@namespace_option
@output_option
@click.argument("profile")
@click.pass_obj
def history(
    terminal: Terminal, management: ManagementAccess, namespace: str, output: str, profile: str
) -> None:
    """PROFILE's kept revisions (ControllerRevisions), oldest first: how many clusters are
    on each, which one is rolling out, and what each changed."""

    def look(reader: Reader) -> None:
        body = _profile(reader, namespace, profile)
        path = collection("apps", "v1", "controllerrevisions", namespace)
        snapshots = [
            parse_snapshot(r) for r in reader.list(path, f"{LABEL_PROFILE}={profile}") or []
        ]
        views = clusters(_deployments(reader, namespace, profile))
        record = (body.get("status") or {}).get("rollout")
        if output == "json":
            terminal.data(history_json(snapshots, views, record), "json")
            return
        if not snapshots:
            terminal.print(f"AddonProfile {namespace}/{profile} has no revisions yet")
            return
        terminal.print(columns(history_rows(snapshots, views, record)))

    read_management(terminal, management, look)


def _annotate(
    terminal: Terminal, management: ManagementAccess, namespace: str, name: str, values: JSON
) -> None:
    from kubernetes import client as k8s

    custom = k8s.CustomObjectsApi(management.client())
    patch = {"metadata": {"annotations": values}}
    try:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "addonprofiles", name, patch
        )
    except k8s.ApiException as error:
        terminal.abort(f"cannot annotate AddonProfile {namespace}/{name}: {error.reason}")


def _rollout_of(
    terminal: Terminal, management: ManagementAccess, namespace: str, name: str
) -> JSON:
    """The profile's rollout record; a profile without spec.rollout has nothing to steer."""
    body = read_management(terminal, management, lambda r: _profile(r, namespace, name))
    if not rolls_out(body):
        terminal.abort(
            f"AddonProfile {namespace}/{name} has no spec.rollout: its revisions reach "
            "every cluster at once, there is no rollout to steer"
        )
    record: JSON = (body.get("status") or {}).get("rollout") or {}
    if not record.get("target"):
        terminal.abort(
            f"AddonProfile {namespace}/{name}: the controller has not planned a rollout yet"
        )
    return record


@rollout.command()
@management_options
@namespace_option
@click.argument("profile")
@click.pass_obj
def pause(terminal: Terminal, management: ManagementAccess, namespace: str, profile: str) -> None:
    """Move no more clusters of PROFILE until `fleet rollout resume`; those moving go on."""
    record = _rollout_of(terminal, management, namespace, profile)
    _annotate(terminal, management, namespace, profile, {ROLLOUT_PAUSE_ANNOTATION: "true"})
    terminal.print(f"AddonProfile {namespace}/{profile}: rollout of {record['target']} paused")


@rollout.command()
@management_options
@namespace_option
@click.argument("profile")
@click.pass_obj
def resume(terminal: Terminal, management: ManagementAccess, namespace: str, profile: str) -> None:
    """Go on with PROFILE's rollout after `fleet rollout pause` or the pause after canaries."""
    record = _rollout_of(terminal, management, namespace, profile)
    values = {ROLLOUT_PAUSE_ANNOTATION: None, ROLLOUT_RESUME_ANNOTATION: record["target"]}
    _annotate(terminal, management, namespace, profile, values)
    terminal.print(f"AddonProfile {namespace}/{profile}: rollout of {record['target']} resumed")


@rollout.command()
@management_options
@namespace_option
@click.argument("profile")
@click.pass_obj
def undo(terminal: Terminal, management: ManagementAccess, namespace: str, profile: str) -> None:
    """Return every cluster of PROFILE to the revision before the one rolling out, with the
    same waves; it holds until the profile or its add-ons change again."""
    record = _rollout_of(terminal, management, namespace, profile)
    if not record.get("previous"):
        terminal.abort(
            f"AddonProfile {namespace}/{profile}: there is no revision before "
            f"{record['target']} to go back to"
        )
    _annotate(terminal, management, namespace, profile, {ROLLOUT_UNDO_ANNOTATION: record["target"]})
    terminal.print(
        f"AddonProfile {namespace}/{profile}: rolling back from {record['target']} "
        f"to {record['previous']}"
    )
