"""Between a profile's objects and the rollout planner: pure, no I/O.

`step` reads the matched clusters' deployments as the planner's `ClusterState`s,
takes in the requests `fleet rollout` leaves as annotations (pause, resume, undo),
asks `fleet.rollout.plan` what moves now, and writes down what happened: the
rollout record kept in the profile's status (its state, counts, the waves with when
each started and completed), the events to post, and when to look again.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fleet.api import (
    MOVED_AT_ANNOTATION,
    ROLLOUT_PAUSE_ANNOTATION,
    ROLLOUT_RESUME_ANNOTATION,
    ROLLOUT_UNDO_ANNOTATION,
)
from fleet.api.models import Cluster
from fleet.rollout import (
    ClusterState,
    RolloutError,
    RolloutPlan,
    RolloutSpec,
    RolloutState,
    plan,
    resume,
    undo,
)
from fleet.status import FAILED, READY

JSON = dict[str, Any]
Event = tuple[str, str, str]
WAVES_KEPT = 100
REASON_LIMIT = 300
NAMES_SHOWN = 10


def precise(moment: float) -> str:
    """RFC 3339 with microseconds: waves a second apart must still sort."""
    when = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def cluster_state(cluster: Cluster, deployment: JSON | None) -> ClusterState:
    """A matched cluster as the planner sees it: its revision is its deployment's profile
    revision, and it is Ready or Failed only once its deployment reports on that spec."""
    if deployment is None:
        return ClusterState(cluster.name, cluster.datacenter, cluster.canary)
    meta = deployment["metadata"]
    status = deployment.get("status") or {}
    current = status.get("observedGeneration") == meta.get("generation")
    moved = seconds((meta.get("annotations") or {}).get(MOVED_AT_ANNOTATION))
    since = moved if moved is not None else seconds(meta.get("creationTimestamp"))
    return ClusterState(
        name=cluster.name,
        datacenter=cluster.datacenter,
        canary=cluster.canary,
        revision=str(deployment["spec"].get("profileRevision", "")),
        ready=current and status.get("phase") == READY,
        since=since or 0.0,
        failed=current and status.get("phase") == FAILED,
    )


@dataclass(slots=True)
class Step:
    """One pass's outcome: clusters to move (cluster -> profile revision), the rollout
    record for the profile's status, events, and when to look again (None: on events)."""

    moves: dict[str, str]
    record: JSON
    events: list[Event] = field(default_factory=list)
    requeue: float | None = None


def _requests(
    annotations: Mapping[str, str], state: RolloutState, events: list[Event]
) -> RolloutState:
    """Undo and resume asked for by annotation, each for the target it names (so a request
    is taken once, and never for a rollout that came after it)."""
    if annotations.get(ROLLOUT_UNDO_ANNOTATION) == state.target and state.target:
        try:
            state = undo(state)
            events.append(
                ("Normal", "RolloutUndo", f"rolling back from {state.previous} to {state.target}")
            )
        except RolloutError as error:
            events.append(("Warning", "RolloutUndo", str(error)))
    if annotations.get(ROLLOUT_RESUME_ANNOTATION) == state.target and state.paused:
        state = resume(state)
    return state


def step(
    spec: RolloutSpec,
    record: JSON | None,
    annotations: Mapping[str, str],
    clusters: list[ClusterState],
    target: str,
    now: float,
    messages: Mapping[str, str] | None = None,
) -> Step:
    """Plan one pass for a profile whose revision `target` rolls out under `spec`.

    `record` is the rollout record this controller last wrote (None before the first);
    a pause asked for by annotation holds as long as the annotation is there, on top
    of the planner's own pause after the canaries. `messages`: each cluster's
    deployment status message, which says why a Failed one failed.
    """
    record = record or {}
    events: list[Event] = []
    kept = RolloutState.from_json(record.get("state"))
    if not kept.requested:  # the first pass: what the clusters are on is where it starts
        kept = _start(clusters, target)
    kept = _requests(annotations, kept, events)
    held = ROLLOUT_PAUSE_ANNOTATION in annotations
    result = plan(spec, replace(kept, paused=kept.paused or held), clusters, now, target=target)
    why = (messages or {}).get(result.failing, "")
    if result.reason == "Failed" and why:
        result = replace(result, reason=f"Failed: {why[:REASON_LIMIT]}")
    # Kept: only the planner's own pause; the annotation's lasts as long as the annotation.
    state = replace(result.new_state, paused=kept.paused) if held else result.new_state
    fresh = (record.get("state") or {}).get("target") != state.target
    waves, started = _waves([] if fresh else record.get("waves") or [], result, now)
    _complete(waves, {c.name: c for c in clusters}, result.moves, now, events)
    if result.phase != record.get("phase") or fresh:
        events += _phase_events(result, record.get("phase"), fresh)
    events += [("Normal", "WaveStarted", _wave_message(w, result.moves)) for w in started]
    completed = None
    if result.phase == "Complete":
        completed = (None if fresh else record.get("completedAt")) or precise(now)
    written = {
        "phase": result.phase,
        "wave": result.wave,
        "target": state.target,
        "previous": state.previous,
        "total": len(clusters),
        # after this pass's moves (the planner counts before them)
        "updated": sum(1 for c in clusters if result.moves.get(c.name, c.revision) == state.target),
        "ready": result.ready,
        "failed": result.failed,
        "failingCluster": result.failing or None,
        "reason": result.reason or None,
        "pausedByUser": held,
        "startedAt": (None if fresh else record.get("startedAt")) or precise(now),
        "completedAt": completed,
        "state": state.to_json(),
        "waves": waves[-WAVES_KEPT:],
    }
    # Written as a merge patch: a null removes what the last record had.
    return Step(
        moves=result.moves,
        record=written,
        events=events,
        requeue=_next_look(spec, clusters, result.moves, state.target, now),
    )


def _start(clusters: list[ClusterState], target: str) -> RolloutState:
    """Where a profile's first planned pass starts: the revision most of its clusters are
    on (what they came from), or nothing before any."""
    on = [c.revision for c in clusters if c.revision and c.revision != target]
    previous = max(sorted(set(on)), key=on.count) if on else ""
    if not previous:
        return RolloutState(target=target, requested=target)
    return RolloutState(target=previous, previous="", requested=previous)


def _waves(kept: list[JSON], result: RolloutPlan, now: float) -> tuple[list[JSON], list[JSON]]:
    """The rollout's waves with this pass's moves added to theirs, and the waves they start."""
    waves = [dict(w) for w in kept]
    if not result.moves:
        return waves, []
    revision = next(iter(result.moves.values()))
    current = next(
        (w for w in reversed(waves) if w["name"] == result.wave and w["revision"] == revision),
        None,
    )
    started = []
    if current is None:
        current = {"name": result.wave, "revision": revision, "started": precise(now)}
        current["clusters"] = []
        waves.append(current)
        started.append(current)
    current["clusters"] = sorted({*current["clusters"], *result.moves})
    current.pop("completed", None)
    return waves, started


def _complete(
    waves: list[JSON],
    clusters: Mapping[str, ClusterState],
    moves: dict[str, str],
    now: float,
    events: list[Event],
) -> None:
    """Mark the waves whose clusters are all Ready on the wave's revision."""
    for wave in waves:
        if wave.get("completed") or any(name in moves for name in wave["clusters"]):
            continue
        states = [clusters.get(name) for name in wave["clusters"]]
        if all(s is not None and s.revision == wave["revision"] and s.ready for s in states):
            wave["completed"] = precise(now)
            count = len(wave["clusters"])
            clusters_ready = f"{count} cluster{'s' if count > 1 else ''} Ready"
            events.append(("Normal", "WaveCompleted", f"wave {wave['name']}: {clusters_ready}"))


def _wave_message(wave: JSON, moves: dict[str, str]) -> str:
    names = sorted(n for n in wave["clusters"] if n in moves)
    shown = ", ".join(names[:NAMES_SHOWN]) + (
        f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    )
    return f"wave {wave['name']}: moving {shown} to revision {wave['revision']}"


def _phase_events(result: RolloutPlan, before: str | None, fresh: bool) -> list[Event]:
    """The events of a rollout's phase changing (`before`), or of a new rollout (`fresh`)."""
    phase, target = result.phase, result.new_state.target
    if fresh and phase != "Complete":
        came_from = result.new_state.previous or "nothing"
        return [("Normal", "RolloutStarted", f"rolling out revision {target} (from {came_from})")]
    if phase == "Complete":
        if not fresh and before is None:
            return []
        return [("Normal", "RolloutComplete", f"every cluster is Ready on revision {target}")]
    if phase == "Halted":
        message = (
            f"rollout of {target} halted: cluster {result.failing}: {result.reason}; "
            "nothing else moves until the profile changes or `fleet rollout undo`"
        )
        return [("Warning", "RolloutHalted", message)]
    if phase == "RollingBack":
        message = (
            f"cluster {result.failing}: {result.reason}: moving clusters back to "
            f"{result.new_state.previous}"
        )
        return [("Warning", "RollingBack", message)]
    if phase == "Paused":
        return [("Normal", "RolloutPaused", f"rollout of {target} paused at {result.wave}")]
    if before == "Paused":
        return [("Normal", "RolloutResumed", f"rollout of {target} goes on at {result.wave}")]
    return []


def _next_look(
    spec: RolloutSpec, clusters: list[ClusterState], moves: dict[str, str], target: str, now: float
) -> float | None:
    """When the first cluster in flight runs out of its health timeout (a timeout comes
    with no event of its own)."""
    timeout = spec.health_timeout_seconds
    ends = [
        c.since + timeout - now
        for c in clusters
        if c.revision == target and c.name not in moves and not (c.ready or c.failed)
    ]
    if moves:
        ends.append(timeout)
    live = [end for end in ends if end > 0]
    return min(live) + 0.5 if live else None
