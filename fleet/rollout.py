"""Plan the progressive rollout of a profile's revision over its clusters: pure, no I/O.

A profile selects many clusters; when it changes, the new revision must reach them
a few at a time, so that a bad revision hurts a few clusters and not the fleet.
Each pass the controller hands over the rollout spec, the `RolloutState` kept in
the profile's status, every matched cluster's revision and health, the time and
the revision the profile asks for; `plan` answers which clusters to move now and
the state to keep. The rules, in the order they are applied:

- every matched cluster on the target and Ready: Complete, nothing moves;
- a cluster on the target that reports Failed, or is not Ready within the health
  timeout, is a failure; under Halt and Rollback the first one is remembered;
- a paused rollout moves nothing;
- after a failure, Halt moves nothing until the target changes, and Rollback moves
  the target's clusters back to the previous revision; Continue goes on without it;
- otherwise the first unfinished wave moves, in name order: the canaries, then
  (with `byDatacenter`) one datacenter after another, else all the rest;
- and never more than `maxUnavailable` clusters are in flight: moved to a revision
  less than the health timeout ago, neither Ready nor failed yet.

A new revision starts over, canaries first, while the clusters still in flight
toward the old one keep counting against the budget. The same inputs give the same
plan, in whatever order the clusters come, so a repeated pass moves nothing new.
"""

from __future__ import annotations

import heapq
import math
import operator
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeGuard, cast

from fleet.errors import PermanentError

Phase = Literal["Progressing", "Paused", "Halted", "Complete", "RollingBack"]
FailurePolicy = Literal["Halt", "Continue", "Rollback"]
FAILURE_POLICIES = ("Halt", "Continue", "Rollback")
FIELDS = (
    "canary",
    "maxUnavailable",
    "byDatacenter",
    "datacenterOrder",
    "pauseAfterCanary",
    "healthTimeoutSeconds",
    "failurePolicy",
)
PERCENT = re.compile(r"([0-9]{1,3})%")
BY_NAME = operator.attrgetter("name")


class RolloutError(PermanentError):
    """A rollout spec or request that cannot be followed; `field` names the part at fault."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"rollout.{field}: {problem}")
        self.field = field


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """How a profile's revisions reach its clusters (`spec.rollout`, read by `parse_rollout`)."""

    # A number of clusters (those flagged canary, topped up in rollout order) or the
    # names of clusters to go first; clusters flagged canary go first either way.
    canary: int | tuple[str, ...] = 0
    max_unavailable: int | str = "25%"
    by_datacenter: bool = False
    datacenter_order: tuple[str, ...] = ()  # with by_datacenter: these first, then by name
    pause_after_canary: bool = False
    health_timeout_seconds: float = 600.0
    failure_policy: FailurePolicy = "Halt"

    def budget(self, matched: int) -> int:
        """How many of `matched` clusters may be in flight at once: a percentage rounds
        down, but never to 0, or a small fleet would never move."""
        if isinstance(self.max_unavailable, int):
            return self.max_unavailable
        return max(1, matched * int(self.max_unavailable[:-1]) // 100)


@dataclass(frozen=True, slots=True)
class ClusterState:
    """One matched cluster as the planner sees it.

    `revision` is the revision it is on or moving to ("" before its first), `ready`
    and `failed` are its add-ons' health at that revision, and `since` is when it
    was moved there, in seconds on the same clock as `plan`'s `now`.
    """

    name: str
    datacenter: str = ""
    canary: bool = False
    revision: str = ""
    ready: bool = False
    since: float = 0.0
    failed: bool = False


@dataclass(frozen=True, slots=True)
class RolloutState:
    """What a rollout remembers between passes, kept in the profile's status.

    `requested` is the revision the profile last asked for; it differs from
    `target` only after an `undo`, and a change of it starts a new rollout.
    `canaries_passed` records that this target's canaries were all done once, so
    that the pause after them happens once. `halted_by` is the cluster whose
    failure stopped the rollout (or started its rollback), with `halt_reason`.
    """

    target: str = ""
    previous: str = ""
    requested: str = ""
    paused: bool = False
    canaries_passed: bool = False
    halted_by: str = ""
    halt_reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "previous": self.previous,
            "requested": self.requested,
            "paused": self.paused,
            "canariesPassed": self.canaries_passed,
            "haltedBy": self.halted_by,
            "haltReason": self.halt_reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RolloutState:
        data = data or {}
        return cls(
            target=str(data.get("target", "")),
            previous=str(data.get("previous", "")),
            requested=str(data.get("requested", "")),
            paused=bool(data.get("paused", False)),
            canaries_passed=bool(data.get("canariesPassed", False)),
            halted_by=str(data.get("haltedBy", "")),
            halt_reason=str(data.get("haltReason", "")),
        )


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """One pass's decision: the clusters to move now (cluster -> revision), where the
    rollout stands, the first failing cluster and why, and the state to keep."""

    moves: dict[str, str]
    phase: Phase
    wave: str
    updated: int
    ready: int
    failed: int
    failing: str
    reason: str
    new_state: RolloutState


def parse_rollout(spec: Mapping[str, Any] | None) -> RolloutSpec:
    """A profile's `spec.rollout` (camelCase) checked field by field; unset or null
    fields take their defaults, unknown fields are errors."""
    unknown = sorted(set(spec or {}) - set(FIELDS))
    if unknown:
        raise RolloutError(unknown[0], f"unknown field (known: {', '.join(FIELDS)})")
    given = {key: value for key, value in (spec or {}).items() if value is not None}
    default = RolloutSpec()
    return RolloutSpec(
        canary=_canary(given.get("canary", default.canary)),
        max_unavailable=_max_unavailable(given.get("maxUnavailable", default.max_unavailable)),
        by_datacenter=_flag("byDatacenter", given.get("byDatacenter", default.by_datacenter)),
        datacenter_order=_names("datacenterOrder", given.get("datacenterOrder", [])),
        pause_after_canary=_flag(
            "pauseAfterCanary", given.get("pauseAfterCanary", default.pause_after_canary)
        ),
        health_timeout_seconds=_timeout(
            given.get("healthTimeoutSeconds", default.health_timeout_seconds)
        ),
        failure_policy=_policy(given.get("failurePolicy", default.failure_policy)),
    )


def _count(value: object) -> TypeGuard[int]:
    # YAML's true is an int to Python; a flag is never a count.
    return isinstance(value, int) and not isinstance(value, bool)


def _canary(value: object) -> int | tuple[str, ...]:
    if _count(value):
        if value < 0:
            raise RolloutError("canary", f"must be 0 or more clusters, not {value}")
        return value
    if isinstance(value, list):
        return _names("canary", value)
    raise RolloutError("canary", f"must be a number of clusters or a list of names, not {value!r}")


def _max_unavailable(value: object) -> int | str:
    if _count(value):
        if value < 1:
            raise RolloutError("maxUnavailable", f"must be at least 1, not {value}")
        return value
    found = PERCENT.fullmatch(value) if isinstance(value, str) else None
    if found is None or not 1 <= int(found[1]) <= 100:
        raise RolloutError(
            "maxUnavailable", f"must be a count or a percentage from 1% to 100%, not {value!r}"
        )
    return f"{int(found[1])}%"


def _flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise RolloutError(field, f"must be true or false, not {value!r}")
    return value


def _names(field: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise RolloutError(field, f"must be a list of names, not {value!r}")
    repeated = sorted(name for name, times in Counter(value).items() if times > 1)
    if repeated:
        raise RolloutError(field, f"names {', '.join(repeated)} more than once")
    return tuple(value)


def _timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RolloutError("healthTimeoutSeconds", f"must be a number of seconds, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise RolloutError("healthTimeoutSeconds", f"must be more than 0, not {value}")
    return float(value)


def _policy(value: object) -> FailurePolicy:
    if value not in FAILURE_POLICIES:
        raise RolloutError(
            "failurePolicy", f"must be one of {', '.join(FAILURE_POLICIES)}, not {value!r}"
        )
    return cast(FailurePolicy, value)


def undo(state: RolloutState) -> RolloutState:
    """A fresh rollout back to the previous revision, with the same waves; it holds for
    as long as the profile asks for the revision it undid."""
    if not state.previous:
        raise RolloutError("undo", f"there is no revision before {state.target!r} to go back to")
    return RolloutState(target=state.previous, previous=state.target, requested=state.requested)


def resume(state: RolloutState) -> RolloutState:
    """Go on after a pause: the user's, or the one after the canaries (which then does
    not come back, as `canaries_passed` stays set)."""
    return replace(state, paused=False)


def canaries(spec: RolloutSpec, clusters: Collection[ClusterState]) -> frozenset[str]:
    """The clusters that go first: those flagged canary or named in the spec, topped up
    to the spec's number with the first clusters in rollout order."""
    named = set(spec.canary) if isinstance(spec.canary, tuple) else set()
    chosen = {c.name for c in clusters if c.canary or c.name in named}
    wanted = spec.canary if isinstance(spec.canary, int) else 0
    if len(chosen) < wanted:
        rest = (c for c in clusters if c.name not in chosen)
        extra = heapq.nsmallest(wanted - len(chosen), rest, key=_rollout_order(spec))
        chosen.update(c.name for c in extra)
    return frozenset(chosen)


def plan(
    spec: RolloutSpec,
    state: RolloutState,
    clusters: Collection[ClusterState],
    now: float,
    *,
    target: str,
) -> RolloutPlan:
    """Which clusters to move now, and the state to keep, for one pass over a profile's
    matched clusters. `target` is the revision the profile asks for: a new one
    supersedes the rollout under way, canaries first again."""
    state = _aim(state, target)
    survey = _survey(spec, state.target, clusters, now)
    if survey.ready == len(clusters):
        done = replace(state, halted_by="", halt_reason="")
        return _report(survey, done, {}, "Complete", "")
    if survey.failing and spec.failure_policy != "Continue" and not state.halted_by:
        state = replace(state, halted_by=survey.failing[0].name, halt_reason=survey.why)
    if state.paused:
        return _report(survey, state, {}, "Paused", _wave_name(survey, 0))
    if state.halted_by and spec.failure_policy == "Rollback" and state.previous:
        return _roll_back(survey, state, clusters)
    if state.halted_by:
        return _report(survey, state, {}, "Halted", _halted_in(spec, state, clusters, survey))
    return _advance(spec, survey, state)


def _aim(state: RolloutState, target: str) -> RolloutState:
    """The state for the revision asked for: the same rollout, or a new one that goes back,
    if it must, to the revision it supersedes, or to the one before that when the
    superseded rollout failed (going back to a failed revision would be no way back)."""
    if target == state.requested:
        return state
    if target == state.target:  # asked again for what an undo went back to
        return replace(state, requested=target)
    previous = state.previous if state.halted_by else state.target
    return RolloutState(target=target, previous=previous, requested=target, paused=state.paused)


@dataclass(slots=True)
class _Wave:
    """Clusters that move together (the canaries, one datacenter, or all the rest), as
    the survey finds them: those off the target, and how many are on it and in flight.
    Filled in by `_survey`, read-only afterwards."""

    name: str
    behind: list[ClusterState]
    canary: bool = False
    on_target: int = 0
    moving: int = 0


@dataclass(frozen=True, slots=True)
class _Survey:
    """The fleet read once against the target: counts, failures, waves in rollout order
    and the first of them with a cluster off the target or in flight."""

    target: str
    budget: int
    in_flight: int
    updated: int
    ready: int
    failing: tuple[ClusterState, ...]  # on the target and failed, first in rollout order
    why: str  # why the first failing cluster fails
    waves: tuple[_Wave, ...]
    current: _Wave | None


def _survey(
    spec: RolloutSpec, target: str, clusters: Collection[ClusterState], now: float
) -> _Survey:
    # One pass over the clusters, kept lean: it runs for every cluster of every profile.
    timeout = spec.health_timeout_seconds
    by_datacenter = spec.by_datacenter
    first = canaries(spec, clusters)
    canary = _Wave("canary", [], canary=True)
    groups: defaultdict[str, _Wave] = defaultdict(lambda: _Wave("", []))
    ready = in_flight = 0
    failing: list[ClusterState] = []
    for c in clusters:
        wave = canary if c.name in first else groups[c.datacenter if by_datacenter else ""]
        if c.revision != target:
            wave.behind.append(c)
            if c.revision and not (c.ready or c.failed) and now - c.since < timeout:
                in_flight += 1
            continue
        wave.on_target += 1
        if c.failed or (not c.ready and now - c.since >= timeout):
            failing.append(c)
        elif c.ready:
            ready += 1
        else:
            wave.moving += 1
            in_flight += 1
    in_order = sorted(groups, key=_datacenter_order(spec))
    for group in in_order:
        groups[group].name = (group or "no datacenter") if by_datacenter else ""
    waves = tuple(w for w in (canary, *(groups[g] for g in in_order)) if w.behind or w.on_target)
    failing.sort(key=_rollout_order(spec))
    return _Survey(
        target=target,
        budget=spec.budget(len(clusters)),
        in_flight=in_flight,
        updated=sum(w.on_target for w in waves),
        ready=ready,
        failing=tuple(failing),
        why=_why(failing[0], timeout) if failing else "",
        waves=waves,
        current=next((w for w in waves if w.behind or w.moving), None),
    )


def _why(cluster: ClusterState, timeout: float) -> str:
    return "Failed" if cluster.failed else f"not Ready within {timeout:g} s"


def _datacenter_order(spec: RolloutSpec) -> Callable[[str], tuple[int, str]]:
    rank = {dc: i for i, dc in enumerate(spec.datacenter_order)}
    return lambda dc: (rank.get(dc, len(rank)), dc)


def _rollout_order(spec: RolloutSpec) -> Callable[[ClusterState], tuple[int, str, str]]:
    if not spec.by_datacenter:
        return lambda c: (0, "", c.name)
    datacenter = _datacenter_order(spec)
    return lambda c: (*datacenter(c.datacenter), c.name)


def _wave_name(survey: _Survey, moved: int) -> str:
    """The current wave's name once `moved` more of it move, numbered by budget's worths
    of moves when it takes more than one (`dc-2 wave 3`); without datacenters, the rest
    of the fleet is `wave N`."""
    wave = survey.current
    if wave is None:
        return ""
    size = wave.on_target + len(wave.behind)
    number = max(1, math.ceil((wave.on_target + moved) / survey.budget))
    if not wave.name:
        return f"wave {number}"
    return wave.name if size <= survey.budget else f"{wave.name} wave {number}"


def _halted_in(
    spec: RolloutSpec, state: RolloutState, clusters: Collection[ClusterState], survey: _Survey
) -> str:
    """The wave of the cluster that halted the rollout (where it stopped, not where it
    would go on)."""
    found = next((c for c in clusters if c.name == state.halted_by), None)
    if found is None:
        return _wave_name(survey, 0)
    if found.name in canaries(spec, clusters):
        return "canary"
    if spec.by_datacenter:
        return found.datacenter or "no datacenter"
    return _wave_name(survey, 0)


def _advance(spec: RolloutSpec, survey: _Survey, state: RolloutState) -> RolloutPlan:
    """Move the current wave's clusters, in name order, as far as the budget allows."""
    if not state.canaries_passed and (survey.current is None or not survey.current.canary):
        state = replace(state, canaries_passed=True)
        if spec.pause_after_canary and survey.waves and survey.waves[0].canary:
            return _report(survey, replace(state, paused=True), {}, "Paused", _wave_name(survey, 0))
    room = max(0, survey.budget - survey.in_flight)
    behind = survey.current.behind if survey.current else []
    chosen = heapq.nsmallest(room, behind, key=BY_NAME)
    moves = {c.name: survey.target for c in chosen}
    return _report(survey, state, moves, "Progressing", _wave_name(survey, len(chosen)))


def _roll_back(
    survey: _Survey, state: RolloutState, clusters: Collection[ClusterState]
) -> RolloutPlan:
    """Move the target's clusters back to the previous revision within the same budget,
    the failing first: they are the ones hurting."""
    failing = {c.name for c in survey.failing}
    back = [c for c in clusters if c.revision == state.target and c.name not in failing]
    if not back and not failing:
        return _report(survey, state, {}, "Halted", "rolled back")
    room = max(0, survey.budget - survey.in_flight)
    chosen = sorted(survey.failing, key=BY_NAME) + heapq.nsmallest(room, back, key=BY_NAME)
    moves = {c.name: state.previous for c in chosen[:room]}
    return _report(survey, state, moves, "RollingBack", "rollback")


def _report(
    survey: _Survey, state: RolloutState, moves: dict[str, str], phase: Phase, wave: str
) -> RolloutPlan:
    if state.halted_by:
        failing, reason = state.halted_by, state.halt_reason
    else:
        failing, reason = (survey.failing[0].name, survey.why) if survey.failing else ("", "")
    return RolloutPlan(
        moves=moves,
        phase=phase,
        wave=wave,
        updated=survey.updated,
        ready=survey.ready,
        failed=len(survey.failing),
        failing=failing,
        reason=reason,
        new_state=state,
    )
