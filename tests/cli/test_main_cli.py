"""`fleet` lists every command without importing it, and imports only the command that runs."""

import importlib
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from fleet.cli.main import COMMANDS, cli

HEAVY = ("kopf", "fleet.controller", "kubernetes")


def imported(*args: str) -> set[str]:
    """Every module `python -m fleet ARGS` imports, from `-X importtime` on stderr."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fleet", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "imported package" not in line
    }


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(f"{h}.") for h in HEAVY))


@pytest.mark.parametrize("args", [("--help",), ("status", "--help")])
def test_help_imports_neither_the_controller_nor_the_kubernetes_client(args):
    modules = imported(*args)
    assert heavy(modules) == []
    assert "fleet.cli.dev" not in modules
    assert "fleet.cli.install" not in modules


def test_help_lists_every_command_exactly_as_if_each_were_imported():
    eager = click.Group(
        "fleet",
        commands={
            name: getattr(importlib.import_module(entry.module), entry.attribute)
            for name, entry in COMMANDS.items()
        },
        params=cli.params,
        help=cli.help,
        context_settings=cli.context_settings,
    )
    runner = CliRunner()
    lazy_help = runner.invoke(cli, ["--help"], prog_name="fleet").output
    assert lazy_help == runner.invoke(eager, ["--help"], prog_name="fleet").output
    listing = lazy_help.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listing] == sorted(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_row_names_its_command_and_repeats_its_own_short_help(name):
    entry = COMMANDS[name]
    command = getattr(importlib.import_module(entry.module), entry.attribute)
    assert command.name == name
    assert entry.short_help == command.get_short_help_str(limit=1000)


def test_an_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(cli, ["nope"], prog_name="fleet")
    assert result.exit_code == 2
    assert "No such command 'nope'." in result.stderr
