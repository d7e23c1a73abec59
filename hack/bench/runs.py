"""What every benchmark's command line and report share: the figures' header (command,
start, revision, CPUs) and a `--tools` list checked against the rows it can run."""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

from scale import git_revision


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How the benchmark was run, to print under its figures."""
    return shlex.join(["python3", script, *(sys.argv[1:] if argv is None else argv)])


def report_head(command: str, **more: Any) -> dict[str, Any]:
    return {
        "command": command,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "cpus": os.cpu_count(),
        **more,
    }


def tool_list(known: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated names, each one of `known`."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names or any(n not in known for n in names):
            raise argparse.ArgumentTypeError(f"choose among {','.join(known)}")
        return names

    return parse
