"""Decisions about an AddonDeployment's status: when to act, how to summarise.

Pure functions over the object's spec and status and the current time, so
retry, backoff and drift scheduling are tested without a cluster.
"""

from __future__ import annotations

import datetime
import zlib
from typing import Any

import tenacity

JSON = dict[str, Any]

PENDING, APPLYING, READY = "Pending", "Applying", "Ready"
DEGRADED, FAILED, UNREACHABLE, DELETING = "Degraded", "Failed", "Unreachable", "Deleting"
# The deployment's phase is its worst add-on's.
SEVERITY = (READY, PENDING, APPLYING, DEGRADED, UNREACHABLE, FAILED, DELETING)
POLL_PHASES = (PENDING, APPLYING, DEGRADED)
POLL_SECONDS = 2
# A Ready deployment is probed (reachability and health, reads only) this often,
# and compared for drift (dry-run applies) at its own, longer interval.
PROBE_SECONDS = 30

DRIFT_CHECK, PROBE = "drift check", "probe"
BACKOFF = tenacity.wait_exponential(multiplier=2, min=2, max=120)
DRIFT_JITTER = 0.1


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def backoff_seconds(failures: int) -> float:
    """Delay before the next attempt after `failures` consecutive failures (capped)."""
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(failures, 1)
    return float(BACKOFF(state))


def drift_interval(name: str, seconds: int) -> float:
    """The drift interval, jittered per object so that checks spread out over time."""
    spread = (zlib.crc32(name.encode()) % 1000) / 1000
    return seconds * (1 + DRIFT_JITTER * spread)


def due(
    body: JSON, moment: datetime.datetime, last_attempt: datetime.datetime | None
) -> str | None:
    """Why this deployment should be reconciled now, or None to leave it alone.

    `last_attempt` is when this controller process last reconciled it (kept
    in memory, so that a pass that changes nothing writes nothing); None
    after a restart, when everything is looked at once.
    """
    spec, status = body.get("spec") or {}, body.get("status") or {}
    next_attempt = parse_time(status.get("nextAttemptTime"))
    if next_attempt and moment < next_attempt:
        return None
    if status.get("appliedRevision") != spec.get("revision"):
        return "revision changed"
    phase = status.get("phase")
    if phase in (FAILED, UNREACHABLE):
        return f"retry after {phase}"
    if last_attempt is None:
        return "first look since the controller started"
    elapsed = (moment - last_attempt).total_seconds()
    if phase in POLL_PHASES:
        return str(phase).lower() if elapsed >= POLL_SECONDS else None
    interval = drift_interval(body["metadata"]["name"], int(spec.get("driftIntervalSeconds", 180)))
    if elapsed >= interval:
        return DRIFT_CHECK
    return PROBE if elapsed >= min(PROBE_SECONDS, interval) else None


def material(status: JSON) -> JSON:
    """A status without its attempt timestamp: what decides whether it is worth a write."""
    return {key: value for key, value in status.items() if key != "lastAttemptTime"}


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
