"""All terminal output goes through one Terminal: data to stdout, progress to stderr.

Progress lines are for people; when stderr is not a terminal they are still
written (CI logs want them) but without colour or spinners.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click
import yaml

if TYPE_CHECKING:
    from rich.console import Console

# Control characters but newline and tab: text from the cluster (a status
# message, say) must not move the cursor or start an escape sequence.
UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Terminal:
    def __init__(self, *, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet
        self.verbose = verbose

    @functools.cached_property
    def err(self) -> Console:
        """stderr, through rich; imported on first use, which a quiet `fleet status` never makes."""
        from rich.console import Console

        return Console(stderr=True, highlight=False, soft_wrap=True)

    def progress(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message, markup=False)

    def warn(self, message: str) -> None:
        """Bad news that is not an error: printed even with --quiet, never on stdout."""
        self.err.print(f"warning: {message}", markup=False, style="yellow")

    @contextlib.contextmanager
    def bar(self, subject: str) -> Iterator[Callable[[int, int, str], None]]:
        """Progress of `subject` on stderr: a live bar on a terminal, else a line per change.

        Yields show(done, total, line); nothing is shown with --quiet.
        """
        if self.quiet or not self.err.is_terminal:
            last = [""]

            def plain(_done: int, _total: int, line: str) -> None:
                if line != last[0] and not self.quiet:
                    self.err.print(f"{subject}: {line}", markup=False)
                last[0] = line

            yield plain
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.err, transient=True) as live:
            task = live.add_task(subject, total=None)

            def shown(done: int, total: int, line: str) -> None:
                live.update(
                    task, completed=done, total=total or None, description=f"{subject}: {line}"
                )

            yield shown

    def print(self, text: str = "") -> None:
        """Results as plain text; rich would add nothing but 0.15 s per thousand lines."""
        sys.stdout.write(UNPRINTABLE.sub("", text) + "\n")

    def data(self, value: Any, output: str) -> None:
        """Print machine-readable output as JSON or YAML, untouched by rich."""
        if output == "json":
            sys.stdout.write(json.dumps(value, indent=2) + "\n")
        else:
            sys.stdout.write(yaml.safe_dump(value, sort_keys=False))

    def abort(self, message: str, code: int = 1) -> NoReturn:
        self.err.print(f"error: {message}", markup=False, style="red")
        raise click.exceptions.Exit(code)


def columns(rows: Sequence[tuple[str, ...]]) -> str:
    """Rows as left-aligned columns two spaces apart, as kubectl prints tables."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def print_diff(heading: str, heading_style: str, lines: Sequence[str]) -> None:
    """A heading, then unified diff lines coloured on a terminal (+ green, - red)."""
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    console.print(Text(heading, style=heading_style))
    for line in lines:
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
        console.print(Text(line, style=style))
