"""The supervisor's record of each component's restarts, kept beside state.json.

Only the supervisor writes it (atomically, so readers never see half a file);
`fleet dev status` reads it to say how often a component came back and why it
went. Times are seconds since the epoch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

RESTARTS_FILE = "restarts.json"


@dataclass(frozen=True, slots=True)
class Restarts:
    """What the supervisor knows of one component."""

    pid: int = 0  # the process these facts are about; another pid means someone else started it
    count: int = 0  # restarts by the supervisor, never reset (as kubectl's RESTARTS)
    failures: int = 0  # restarts in a row that did not stay up: drives the backoff
    last_restart: float | None = None
    last_exit: str = ""
    next_attempt: float | None = None  # set while a dead component waits out its backoff


def load_restarts(state_dir: Path) -> dict[str, Restarts]:
    path = state_dir / RESTARTS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return {name: Restarts(**entry) for name, entry in data.items()}


def save_restarts(state_dir: Path, ledger: Mapping[str, Restarts]) -> None:
    path = state_dir / RESTARTS_FILE
    partial = path.with_suffix(".partial")
    partial.write_text(
        json.dumps({name: asdict(entry) for name, entry in ledger.items()}, indent=2)
    )
    partial.rename(path)
