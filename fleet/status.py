"""An AddonDeployment's phases, when to look again, and how to summarise.

Pure functions, so retry, health-poll and drift scheduling are tested without
a cluster.
"""

from __future__ import annotations

import datetime
import zlib
from typing import Any

import tenacity

JSON = dict[str, Any]

PENDING, APPLYING, READY, PAUSED = "Pending", "Applying", "Ready", "Paused"
DEGRADED, FAILED, UNREACHABLE, DELETING = "Degraded", "Failed", "Unreachable", "Deleting"
# The deployment's phase is its worst add-on's.
SEVERITY = (READY, PAUSED, PENDING, APPLYING, DEGRADED, UNREACHABLE, FAILED, DELETING)
BACKOFF = tenacity.wait_exponential(multiplier=2, min=2, max=120)
# Health of freshly applied objects is looked at again after 2 s, doubling to 30 s.
HEALTH_POLL = tenacity.wait_exponential(multiplier=2, min=2, max=30)
DRIFT_JITTER = 0.1


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def _wait(strategy: tenacity.wait.wait_base, attempt: int) -> float:
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(attempt, 1)
    return float(strategy(state))


def backoff_seconds(failures: int) -> float:
    """Delay before the next attempt after `failures` consecutive failures (capped)."""
    return _wait(BACKOFF, failures)


def health_poll_seconds(polls: int) -> float:
    """Delay before looking again at objects that are not Ready yet, after `polls` looks."""
    return _wait(HEALTH_POLL, polls)


def drift_interval(name: str, seconds: int) -> float:
    """The drift interval, jittered per object so that checks spread out over time."""
    spread = (zlib.crc32(name.encode()) % 1000) / 1000
    return seconds * (1 + DRIFT_JITTER * spread)


def worst(phases: list[str]) -> str:
    return max(phases, key=SEVERITY.index) if phases else READY


def summary_message(addons: list[JSON]) -> str:
    """One line for `kubectl get addondeployments`: what is wrong, and where."""
    problems = [
        f"{a['name']}: {a['message']}"
        for a in addons
        if a.get("phase") != READY and a.get("message")
    ]
    return "; ".join(problems)[:300]
