"""`fleet render` and `fleet diff` serve two things: a fleet repository (a directory,
default .) and one add-on or profile on the management cluster (a name). The first
argument decides: an existing directory, or none at all without --cluster, is a
repository."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import click

from fleet.cli import preview, repo


class Either(click.Command):
    """A command that is `for_repository` or `for_name`, chosen from the arguments."""

    def __init__(
        self, name: str, for_repository: click.Command, for_name: click.Command, short_help: str
    ) -> None:
        other = inspect.cleandoc(for_name.help or "").split("\n\n", 1)[0]
        super().__init__(
            name,
            help=f"{short_help}\n\n{inspect.cleandoc(for_repository.help or '')}\n\n"
            f"{_usage(name, for_name)}: {other} (`fleet {name} NAME --help` for its options)",
        )
        self.for_repository, self.for_name = for_repository, for_name
        self.params = for_repository.params
        self.chosen: click.Command = for_repository

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        self.chosen = self.for_repository if _repository(args, self.for_name) else self.for_name
        self.params = self.chosen.params
        self.callback = self.chosen.callback
        return self.chosen.parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        return self.chosen.invoke(ctx)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.chosen is self.for_name:
            self.for_name.format_help(ctx, formatter)
        else:
            super().format_help(ctx, formatter)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*self.chosen.collect_usage_pieces(ctx)]


def _usage(name: str, command: click.Command) -> str:
    arguments = " ".join(
        p.human_readable_name for p in command.params if isinstance(p, click.Argument)
    )
    return f"fleet {name} [OPTIONS] {arguments}"


def _taking_values(command: click.Command) -> set[str]:
    return {
        opt
        for p in command.params
        if isinstance(p, click.Option) and not p.is_flag and not p.count
        for opt in p.opts
    }


def _repository(args: list[str], for_name: click.Command) -> bool:
    valued = _taking_values(for_name) | {"-o", "--output", "--kubeconfig", "--context"}
    skip = False
    positional = []
    for arg in args:
        if skip:
            skip = False
        elif arg in valued:
            skip = True
        elif not arg.startswith("-"):
            positional.append(arg)
    if not positional:
        return "--cluster" not in args
    return Path(positional[0]).is_dir()


render = Either(
    "render",
    repo.render,
    preview.render,
    "The Cluster API manifests of a fleet repository; or, given ADDON --cluster, what an "
    "add-on applies to a cluster.",
)
diff = Either(
    "diff",
    repo.diff,
    preview.diff,
    "What `fleet apply` would change on the management cluster; or, given PROFILE, what "
    "applying it would change on its clusters.",
)
