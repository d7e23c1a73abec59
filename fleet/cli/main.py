"""Entry point of `fleet` (and `kubectl fleet`, the same program as a kubectl plugin).

Exit codes: 0 success, 1 an operation failed (the message says why), 2 bad
usage, 3 `fleet status` found problems, 130 interrupted.
"""

from __future__ import annotations

import logging

import click

from fleet import __version__
from fleet.cli.console import Terminal
from fleet.cli.controller import controller
from fleet.cli.dev import dev
from fleet.cli.install import install
from fleet.cli.status import status


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "FLEET"}
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


cli.add_command(dev)
cli.add_command(controller)
cli.add_command(status)
cli.add_command(install)


def main() -> None:
    cli(prog_name="fleet")
