"""Entry point of `fleet` (and `kubectl fleet`, the same program as a kubectl plugin).

Commands are imported only when they run: `fleet controller` pulls in kopf
and the whole controller (seconds of imports), which `fleet status` or
`fleet --help` must not pay for. A new command is one more row in COMMANDS.

Exit codes: 0 success, 1 an operation failed (the message says why) or `fleet
wait` timed out, 2 bad usage, 3 `fleet status` or `fleet describe` found
problems or `fleet rollout status` a Halted rollout, 130 interrupted; `fleet
diff` uses Argo CD's (0 same, 1 different, 2 error).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from fleet import __version__
from fleet.cli.console import Terminal


@dataclass(frozen=True, slots=True)
class LazyCommand:
    module: str
    attribute: str
    # The command's own one-line help, repeated so that `fleet --help` lists it
    # without importing it (a test keeps the two equal).
    short_help: str


COMMANDS = {
    "dev": LazyCommand(
        "fleet.cli.dev",
        "dev",
        "Run a real local fleet without Docker: planes, kwok GPU nodes, registries, Prometheus.",
    ),
    "controller": LazyCommand(
        "fleet.cli.controller", "controller", "Run the fleet controller (kopf) until interrupted."
    ),
    "status": LazyCommand(
        "fleet.cli.status",
        "status",
        "One line per cluster: datacenter, phase, version, GPUs, add-ons ready, problems.",
    ),
    "describe": LazyCommand(
        "fleet.cli.describe",
        "describe",
        "One cluster's add-ons, or one profile's clusters, as a tree: problems first.",
    ),
    "render": LazyCommand(
        "fleet.cli.either",
        "render",
        "The Cluster API manifests of a fleet repository; or, given ADDON --cluster, what an "
        "add-on applies to a cluster.",
    ),
    "diff": LazyCommand(
        "fleet.cli.either",
        "diff",
        "What `fleet apply` would change on the management cluster; or, given PROFILE, what "
        "applying it would change on its clusters.",
    ),
    "validate": LazyCommand(
        "fleet.cli.repo",
        "validate",
        "Every error of a fleet repository, not just the first.",
    ),
    "apply": LazyCommand(
        "fleet.cli.repo",
        "apply",
        "Publish a fleet repository to the management cluster.",
    ),
    "wait": LazyCommand(
        "fleet.cli.wait",
        "wait",
        "Wait until a profile's add-ons are Ready on every cluster it selects, or a cluster's "
        "add-ons are Ready; progress on stderr, exit 1 on timeout.",
    ),
    "confirm-removal": LazyCommand(
        "fleet.cli.confirm",
        "confirm_removal",
        "Confirm the removal of add-ons that PROFILE holds back for a human.",
    ),
    "models": LazyCommand(
        "fleet.cli.models",
        "models",
        "Every ModelArtifact against every datacenter: Replicated, Copying n %, Failed: why.",
    ),
    "rollout": LazyCommand(
        "fleet.cli.rollout",
        "rollout",
        "See and steer the progressive rollout of a profile's revisions (spec.rollout).",
    ),
    "install": LazyCommand(
        "fleet.cli.install",
        "install",
        "Install (or upgrade) fleet on a management cluster with server-side apply.",
    ),
    "model": LazyCommand(
        "fleet.cli.model",
        "model",
        "Push a model directory to an OCI registry as a ModelPack artifact, or pull one back.",
    ),
    "webhook": LazyCommand(
        "fleet.cli.webhook",
        "webhook",
        "Serve fleet's admission webhooks: model mounts, cloud credentials, GPU sharing.",
    ),
    "agent": LazyCommand(
        "fleet.cli.agent",
        "agent",
        "Keep this node's model cache equal to the models assigned to its cluster.",
    ),
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command is looked up to run."""

    def __init__(self, *args: Any, lazy: Mapping[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, context: click.Context) -> list[str]:
        return sorted({*super().list_commands(context), *self.lazy})

    def get_command(self, context: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            entry = self.lazy[name]
            command = getattr(importlib.import_module(entry.module), entry.attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{entry.module}.{entry.attribute} is not a click command")
            self.add_command(command, name)
        return super().get_command(context, name)

    def format_commands(self, context: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, with the short help of commands not yet imported taken from COMMANDS."""
        names = self.list_commands(context)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        listing = []
        for name in names:
            if name in self.commands:
                listing.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                text = self.lazy[name].short_help
                # A stand-in command shortens the text exactly as click does for real ones.
                stand_in = click.Command(name, help=text)
                listing.append((name, stand_in.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(listing)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "FLEET"},
)
@click.version_option(__version__, prog_name="fleet")
@click.option("-q", "--quiet", is_flag=True, help="Print no progress, only results and errors.")
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug) to stderr.")
@click.pass_context
def cli(context: click.Context, quiet: bool, verbose: int) -> None:
    """fleet: add-ons, model artifacts and progressive rollouts for Cluster API GPU fleets.

    Every option can also be set from the environment as FLEET_<COMMAND>_<OPTION>,
    e.g. FLEET_DEV_UP_CLUSTERS=3.
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    context.obj = Terminal(quiet=quiet, verbose=verbose > 0)


def program_name(argv0: str) -> str:
    """`kubectl fleet` when kubectl runs us as its plugin `kubectl-fleet`, else `fleet`."""
    return "kubectl fleet" if Path(argv0).name == "kubectl-fleet" else "fleet"


def main() -> None:
    cli(prog_name=program_name(sys.argv[0]))
