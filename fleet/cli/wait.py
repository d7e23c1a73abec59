"""`fleet wait profile|cluster NAME --for Ready`: block until converged, showing progress.

As `kubectl wait` and `argocd app wait`: exit 0 once every deployment is Ready
at its wanted revision (and, for a profile that rolls out, on the profile
revision it asks for); on timeout, exit 1 naming every cluster not Ready and
why. Progress goes to stderr: a bar on a terminal, a plain line per change
when piped.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from typing import Any

import click

from fleet.api import GROUP, LABEL_CLUSTER, LABEL_PROFILE, VERSION
from fleet.cli.console import Terminal
from fleet.cli.options import ManagementAccess, management_options, read_management
from fleet.progress import Progress, progress
from fleet.rolloutview import rolls_out
from fleet.sources import ReadError
from fleet.sources.management import asked_revision, collection
from fleet.sources.reader import Reader

JSON = dict[str, Any]
TIMED_OUT = 1
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?")


def parse_duration(_context: click.Context, _param: click.Parameter, value: str) -> float:
    """Seconds from `300`, `90s`, `5m`, `1h30m` (Go's duration style, as kubectl takes)."""
    match = _DURATION.fullmatch(value.strip())
    if not value.strip() or match is None:
        raise click.BadParameter(f"{value!r} is not a duration such as 90s, 5m or 1h")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def read_progress(reader: Reader, kind: str, namespace: str, name: str) -> Progress:
    """One look: the deployments of the profile (and the clusters it selects) or the cluster."""
    deployments = collection(GROUP, VERSION, "addondeployments", namespace)
    if kind == "cluster":
        found = reader.list(deployments, f"{LABEL_CLUSTER}={name}")
        return progress(found or [])
    path = f"{collection(GROUP, VERSION, 'addonprofiles', namespace)}/{urllib.parse.quote(name)}"
    profile = reader.get(path).body
    if profile is None:
        raise ReadError(f"AddonProfile {namespace}/{name} not found")
    status = profile.get("status") or {}
    expected = [f"{namespace}/{cluster}" for cluster in status.get("matchedClusters") or []]
    found = reader.list(deployments, f"{LABEL_PROFILE}={name}") or []
    if not rolls_out(profile):
        return progress(found, expected)
    # Done once every cluster is on the revision the profile asks for now (or, after an
    # undo of it, the one the undo went back to), planned or not yet.
    record = status.get("rollout") or {}
    asked = asked_revision(reader, profile)
    undone = (record.get("state") or {}).get("requested") == asked
    return progress(found, expected, record.get("target", "") if undone else asked)


@click.command()
@management_options
@click.option(
    "-n", "--namespace", default="default", show_default=True, help="Namespace of the object."
)
@click.option(
    "--for",
    "condition",
    type=click.Choice(["Ready"]),
    default="Ready",
    show_default=True,
    help="What to wait for: every AddonDeployment Ready at its wanted revision.",
)
@click.option(
    "--timeout",
    default="5m",
    show_default=True,
    callback=parse_duration,
    help="How long to wait (90s, 5m, 1h); exit 1 after it, naming what is not Ready.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds between looks at the management cluster.",
)
@click.argument("kind", type=click.Choice(["profile", "cluster"]))
@click.argument("name")
@click.pass_obj
def wait(
    terminal: Terminal,
    management: ManagementAccess,
    namespace: str,
    condition: str,
    timeout: float,
    interval: float,
    kind: str,
    name: str,
) -> None:
    """Wait until a profile's add-ons are Ready on every cluster it selects, or a cluster's
    add-ons are Ready; progress on stderr, exit 1 on timeout."""
    subject = f"{kind} {namespace}/{name}"
    deadline = time.monotonic() + timeout

    def until_done(reader: Reader) -> Progress:
        with terminal.bar(subject) as show:
            while True:
                now = read_progress(reader, kind, namespace, name)
                show(now.ready, now.total, now.line())
                if now.done or time.monotonic() >= deadline:
                    return now
                time.sleep(min(interval, max(deadline - time.monotonic(), 0)))

    now = read_management(terminal, management, until_done)
    if now.done:
        terminal.print(f"{subject}: {now.line()}")
        return
    lagging = "\n".join(f"  {lag}" for lag in now.laggards) or "  no AddonDeployment yet"
    terminal.abort(
        f"timed out after {timeout:g} s waiting for {subject} to be {condition}: "
        f"{now.line()}\n{lagging}",
        TIMED_OUT,
    )
