"""What `fleet rollout status` and `fleet rollout history` show, from what they read: pure.

The profile (its `status.rollout` record), its AddonDeployments and its
ControllerRevisions become rows of text: a line of where the rollout stands, a
bar per wave (its clusters Ready on the wave's revision), the clusters still
waiting, and the kept revisions with what each changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.revisions import Snapshot, change
from fleet.status import READY

JSON = dict[str, Any]
BAR_WIDTH = 20
NAMES_SHOWN = 6
# Phases after which `--watch` stops: nothing moves until someone acts.
SETTLED = ("Complete", "Halted")


def rolls_out(profile: JSON) -> bool:
    """Whether the profile has a rollout spec (`rollout: {}` is one, all defaults)."""
    return (profile.get("spec") or {}).get("rollout") is not None


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One cluster of the profile: the revision it is on and whether it is Ready there."""

    name: str
    revision: str
    ready: bool
    phase: str

    def to_json(self) -> JSON:
        return {"revision": self.revision, "phase": self.phase, "ready": self.ready}


def clusters(deployments: list[JSON]) -> dict[str, ClusterView]:
    views = {}
    for d in deployments:
        status = d.get("status") or {}
        current = status.get("observedGeneration") == d["metadata"].get("generation")
        phase = str(status.get("phase") or "Pending")
        name = d["spec"]["cluster"]
        views[name] = ClusterView(
            name, str(d["spec"].get("profileRevision") or ""), current and phase == READY, phase
        )
    return dict(sorted(views.items()))


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = round(width * done / total) if total else width
    return "█" * filled + "░" * (width - filled)


def _clock(stamp: str | None) -> str:
    """The time of day of an RFC 3339 stamp, to the second (the date is in `startedAt`)."""
    return stamp[11:19] if stamp and len(stamp) >= 19 else "-"


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" +{len(names) - NAMES_SHOWN}" if len(names) > NAMES_SHOWN else "")


Row = tuple[str, ...]


def status_lines(profile: JSON, views: dict[str, ClusterView]) -> tuple[list[str], list[Row]]:
    """`fleet rollout status`: lines of the rollout's state, and a row per wave (its bar)
    and for the clusters still waiting; no rows without a rollout."""
    meta = profile["metadata"]
    title = f"AddonProfile {meta['namespace']}/{meta['name']}"
    record = (profile.get("status") or {}).get("rollout")
    if not rolls_out(profile):
        revision = (profile.get("status") or {}).get("revision", "?")
        on = sum(1 for v in views.values() if v.revision == revision and v.ready)
        return [
            f"{title}: no spec.rollout, so every cluster gets a new revision at once",
            f"revision {revision}: {on}/{len(views)} clusters Ready on it",
        ], []
    if not record:
        return [f"{title}: the controller has not planned a rollout yet"], []
    came = f" (from {record['previous']})" if record.get("previous") else ""
    lines = [f"{title}: revision {record.get('target')}{came}"]
    phase = str(record.get("phase"))
    if record.get("pausedByUser"):
        phase += " (fleet rollout resume to go on)"
    elif phase == "Paused":
        phase += " after the canaries (fleet rollout resume to go on)"
    lines.append(f"phase    {phase}")
    if record.get("wave"):
        lines.append(f"wave     {record['wave']}")
    lines.append(
        f"clusters {record.get('updated', 0)}/{record.get('total', 0)} updated, "
        f"{record.get('ready', 0)} Ready, {record.get('failed', 0)} failed"
    )
    if record.get("failingCluster"):
        why = f": {record['reason']}" if record.get("reason") else ""
        lines.append(f"failing  {record['failingCluster']}{why}")
    started = record.get("startedAt", "")
    finished = record.get("completedAt")
    lines.append(f"started  {started}" + (f", completed {finished}" if finished else ""))
    rows: list[Row] = [("WAVE", "PROGRESS", "READY", "STARTED", "COMPLETED", "CLUSTERS")]
    for wave in record.get("waves") or []:
        names = list(wave.get("clusters") or [])
        ready = sum(
            1
            for n in names
            if (v := views.get(n)) is not None and v.revision == wave["revision"] and v.ready
        )
        rows.append(
            (
                str(wave["name"]),
                bar(ready, len(names)),
                f"{ready}/{len(names)}",
                _clock(wave.get("started")),
                _clock(wave.get("completed")),
                _names(names),
            )
        )
    in_waves = {n for wave in record.get("waves") or [] for n in wave.get("clusters") or []}
    waiting = sorted(
        n for n, v in views.items() if v.revision != record.get("target") and n not in in_waves
    )
    missing = int(record.get("total", 0)) - len(views)
    if waiting or missing > 0:
        parts = [_names(waiting)] if waiting else []
        parts += [f"{missing} without add-ons yet"] if missing > 0 else []
        label = " and ".join(parts)
        rows.append(("waiting", bar(0, 1), f"0/{len(waiting) + max(missing, 0)}", "-", "-", label))
    return lines, rows if len(rows) > 1 else []


def history_rows(
    snapshots: list[Snapshot], views: dict[str, ClusterView], record: JSON | None
) -> list[Row]:
    """`fleet rollout history`: a header and one row per kept revision, oldest first."""
    record = record or {}
    rows: list[Row] = [("REVISION", "HASH", "CREATED", "CLUSTERS", "", "CHANGE")]
    ordered = sorted(snapshots, key=lambda s: s.number)
    for before, snapshot in zip([None, *ordered], ordered, strict=False):
        on = sum(1 for v in views.values() if v.revision == snapshot.hash)
        mark = _mark(snapshot, record)
        rows.append(
            (
                str(snapshot.number),
                snapshot.hash,
                snapshot.created,
                str(on),
                mark,
                _change(before, snapshot),
            )
        )
    return rows


def _change(before: Snapshot | None, snapshot: Snapshot) -> str:
    """What a revision changed; unknown when the one before it is no longer kept."""
    if before is None and snapshot.number > 1:
        return "(the revision before it is no longer kept)"
    return change(before, snapshot)


def _mark(snapshot: Snapshot, record: JSON) -> str:
    if snapshot.hash == record.get("target"):
        return "target"
    return "previous" if snapshot.hash == record.get("previous") else ""


def history_json(
    snapshots: list[Snapshot], views: dict[str, ClusterView], record: JSON | None
) -> list[JSON]:
    ordered = sorted(snapshots, key=lambda s: s.number)
    return [
        {
            "revision": s.number,
            "hash": s.hash,
            "name": s.name,
            "created": s.created,
            "clusters": sorted(n for n, v in views.items() if v.revision == s.hash),
            "mark": _mark(s, record or {}),
            "change": _change(before, s),
        }
        for before, s in zip([None, *ordered], ordered, strict=False)
    ]
