"""`fleet render` and `fleet diff` serve two things: a fleet repository (a directory,
default .) and one add-on or profile on the management cluster (a name). The first
argument decides: an existing directory, or none at all without --cluster, is a
repository. The add-on and profile commands are imported only when chosen: the
repository's `render` runs in a second, and must not pay for them."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import click

from fleet.cli import repo

# Options of `fleet render ADDON` and `fleet diff PROFILE` that take a value, so that the
# value is not taken for the first argument (a test keeps this equal to theirs).
VALUED = frozenset(
    ("--cluster", "--profile", "-n", "--namespace", "--helm", "--kubeconfig", "--context")
)


class Either(click.Command):
    """A command that is `for_repository` or the command `for_name` names, chosen from the
    arguments."""

    def __init__(
        self,
        name: str,
        for_repository: click.Command,
        for_name: str,
        short_help: str,
        name_usage: str,
    ) -> None:
        super().__init__(
            name,
            help=f"{short_help}\n\n{inspect.cleandoc(for_repository.help or '')}\n\n"
            f"{name_usage} (`fleet {name} NAME --help` for its options)",
        )
        self.for_repository, self.for_name = for_repository, for_name
        self.params = for_repository.params
        self.chosen: click.Command = for_repository

    def named(self) -> click.Command:
        """The add-on or profile command (`module:attribute`), imported now."""
        module, _, attribute = self.for_name.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.for_name} is not a click command")
        return command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        self.chosen = self.for_repository if repository(args) else self.named()
        self.params = self.chosen.params
        self.callback = self.chosen.callback
        return self.chosen.parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        return self.chosen.invoke(ctx)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.chosen is not self.for_repository:
            self.chosen.format_help(ctx, formatter)
        else:
            super().format_help(ctx, formatter)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*self.chosen.collect_usage_pieces(ctx)]


def repository(args: list[str]) -> bool:
    """Whether the arguments name a repository: no argument (and no --cluster), or an
    existing directory first."""
    skip = False
    positional = []
    for arg in args:
        if skip:
            skip = False
        elif arg in VALUED or arg in ("-o", "--output"):
            skip = True
        elif not arg.startswith("-"):
            positional.append(arg)
    if not positional:
        return "--cluster" not in args
    return Path(positional[0]).is_dir()


render = Either(
    "render",
    repo.render,
    "fleet.cli.preview:render",
    "The Cluster API manifests of a fleet repository; or, given ADDON --cluster, what an "
    "add-on applies to a cluster.",
    "fleet render [OPTIONS] ADDON --cluster NAME: exactly the objects ADDON would apply to "
    "a cluster, as YAML documents.",
)
diff = Either(
    "diff",
    repo.diff,
    "fleet.cli.preview:diff",
    "What `fleet apply` would change on the management cluster; or, given PROFILE, what "
    "applying it would change on its clusters.",
    "fleet diff [OPTIONS] PROFILE: what applying PROFILE now would change on its clusters "
    "(a server-side dry run).",
)
