#!/usr/bin/env python3
"""Time the rollout planner: one planning pass over every profile of a large fleet.

Usage:
    python3 hack/bench/rollout_planner.py [--clusters 10000] [--profiles 5] [--repeat 9]

Every profile matches the same clusters, spread over 10 datacenters with 2% of
them flagged canary and handed over in a shuffled order, and finds its rollout in
a different situation, taken in turn: datacenter by datacenter half way, across
the fleet half way, going on past failed clusters, superseded by a new revision,
and rolling back. A pass plans every profile once; the figures are the median of
`--repeat` passes, for the whole pass and per profile, against the 50 ms a
controller pass can spare.

Then the whole of a profile's pass as the controller makes it (`profiles.decide`:
selection, revisions, the planner, the deployments to write, the status) over
`--pass-clusters` clusters in the middle of a rollout, against the same pass with no
`spec.rollout`. Pure CPU: no cluster, no network.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

from fleet.api import LABEL_DATACENTER
from fleet.api.models import Cluster
from fleet.controller.profiles import Decision, History, decide
from fleet.rollout import ClusterState, RolloutPlan, RolloutSpec, RolloutState, plan

DATACENTERS = 10
CANARY_SHARE = 0.02
DONE_SHARE = 0.45  # of the clusters, in rollout order, already on the target
TARGET_MS = 50.0
NOW = 1_000_000.0
JSON = dict[str, Any]


@dataclass(frozen=True)
class Profile:
    situation: str
    spec: RolloutSpec
    state: RolloutState
    clusters: list[ClusterState]
    target: str

    def plan(self) -> RolloutPlan:
        return plan(self.spec, self.state, self.clusters, NOW, target=self.target)


ROLLING = RolloutState(target="r2", previous="r1", requested="r2", canaries_passed=True)
BY_DATACENTER = RolloutSpec(max_unavailable="5%", by_datacenter=True, datacenter_order=("dc-03",))
# Each: what the profile is going through, its spec, the revision it asks for, the share
# of the clusters on the target that failed.
SITUATIONS = (
    ("by datacenter, half way", BY_DATACENTER, "r2", 0.0),
    ("fleet-wide, half way", RolloutSpec(canary=50, max_unavailable="10%"), "r2", 0.0),
    (
        "continue past 1% failed",
        RolloutSpec(max_unavailable="10%", by_datacenter=True, failure_policy="Continue"),
        "r2",
        0.01,
    ),
    ("superseded by r3", BY_DATACENTER, "r3", 0.0),
    ("rolling back", RolloutSpec(max_unavailable=200, failure_policy="Rollback"), "r2", 0.001),
)


def mid_rollout(
    count: int, rnd: random.Random, flying: int, failed_share: float
) -> list[ClusterState]:
    """`count` clusters with the first DONE_SHARE of them (in name order, which is
    datacenter order) on r2, and the canaries too, the last `flying` of those still in
    flight; the rest Ready on r1. They are made in the shuffled order they are handed
    over in, as a controller makes them from what it lists."""
    done = int(count * DONE_SHARE)
    order = list(range(count))
    rnd.shuffle(order)
    clusters = []
    for i in order:
        canary = rnd.random() < CANARY_SHARE
        on_target = canary or i < done
        moving = on_target and not canary and done - flying <= i
        failed = on_target and rnd.random() < failed_share
        clusters.append(
            ClusterState(
                name=f"gpu-{i:05d}",
                datacenter=f"dc-{i * DATACENTERS // count:02d}",
                canary=canary,
                revision="r2" if on_target else "r1",
                ready=not (moving or failed),
                since=NOW - (30.0 if moving else 86_400.0),
                failed=failed,
            )
        )
    return clusters


def profiles(count: int, number: int, rnd: random.Random) -> list[Profile]:
    made = []
    for i in range(number):
        situation, spec, target, failed_share = SITUATIONS[i % len(SITUATIONS)]
        clusters = mid_rollout(count, rnd, spec.budget(count) // 2, failed_share)
        made.append(Profile(situation, spec, ROLLING, clusters, target))
    return made


def profile_body(rollout: dict[str, object] | None) -> dict[str, object]:
    spec: dict[str, object] = {"clusterSelector": {}, "addons": [{"name": "a"}]}
    if rollout is not None:
        spec["rollout"] = rollout
    meta = {"name": "p", "namespace": "ns", "uid": "u", "generation": 1}
    return {"metadata": meta, "spec": spec}


def addon(version: int) -> dict[str, object]:
    return {"kind": "manifests", "templates": {"a.yaml": f"v: {version}"}}


def fleet_of(count: int) -> list[Cluster]:
    return [
        Cluster(
            name=f"c{i:05d}",
            namespace="ns",
            uid=f"u{i}",
            labels={LABEL_DATACENTER: f"dc-{i % DATACENTERS:02d}"},
            annotations={},
            paused=False,
            deleting=False,
            control_plane_ready=True,
            endpoint="",
            topology={},
        )
        for i in range(count)
    ]


def applied(decision: Decision, existing: dict[str, JSON]) -> dict[str, JSON]:
    """The deployments after `decision`, each reporting Ready at its new generation."""
    after = dict(existing)
    for body in decision.create:
        after[body["metadata"]["name"]] = body | {"metadata": body["metadata"] | {"generation": 1}}
    for name, patch in decision.update.items():
        old = after[name]
        meta = old["metadata"] | {"generation": old["metadata"]["generation"] + 1}
        after[name] = old | {"metadata": meta, "spec": patch["spec"]}
    for body in after.values():
        body["status"] = {"phase": "Ready", "observedGeneration": body["metadata"]["generation"]}
    return after


def time_pass(count: int, rollout: dict[str, object] | None, repeat: int) -> tuple[float, int]:
    """Median ms of a profile's pass half way through a rollout of a new revision (or, with
    no rollout, the pass that moves every cluster), and the deployments it writes."""
    clusters, body = fleet_of(count), profile_body(rollout)
    first = decide(body, clusters, {"a": addon(1)}, {}, {}, History(now=NOW))
    existing = applied(first, {})
    history = History(now=NOW)
    if rollout is not None:
        while True:  # pass after pass, every moved cluster Ready, until half are on revision 2
            decision = decide(body, clusters, {"a": addon(2)}, {}, existing, history)
            history = History(now=NOW, record=decision.status["rollout"])
            existing = applied(decision, existing)
            if decision.status["rollout"]["updated"] >= count // 2:
                break
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        decision = decide(body, clusters, {"a": addon(2)}, {}, existing, history)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), len(decision.update) + len(decision.create)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
    )
    parser.add_argument(
        "--clusters", type=int, default=10_000, help="clusters every profile matches (10000)"
    )
    parser.add_argument("--profiles", type=int, default=5, help="profiles planned per pass (5)")
    parser.add_argument("--repeat", type=int, default=9, help="passes timed, the median kept (9)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random fleet (1)")
    parser.add_argument(
        "--pass-clusters",
        type=int,
        nargs="*",
        default=[1_000, 10_000],
        help="clusters of the profile whose whole pass is timed (1000 10000)",
    )
    options = parser.parse_args()

    rnd = random.Random(options.seed)  # noqa: S311 (a repeatable fleet, not a secret)
    planned = profiles(options.clusters, options.profiles, rnd)
    planned[0].plan()  # warm up: first calls pay for imports and caches
    passes: list[list[float]] = []
    for _ in range(options.repeat):
        timings = []
        for profile in planned:
            started = time.perf_counter()
            profile.plan()
            timings.append((time.perf_counter() - started) * 1000)
        passes.append(timings)

    print(
        f"rollout planner: {options.clusters:,} clusters x {options.profiles} profiles, "
        f"{DATACENTERS} datacenters, {CANARY_SHARE:.0%} canaries, "
        f"median of {options.repeat} passes"
    )
    print(f"{'profile':<8}{'situation':<28}{'phase':<13}{'wave':<14}{'moves':>7}{'ms':>9}")
    for i, profile in enumerate(planned):
        result = profile.plan()
        median = statistics.median(timings[i] for timings in passes)
        print(
            f"{i + 1:<8}{profile.situation:<28}{result.phase:<13}{result.wave:<14}"
            f"{len(result.moves):>7}{median:>9.2f}"
        )
    total = statistics.median(sum(timings) for timings in passes)
    verdict = "within" if total < TARGET_MS else "OVER"
    print(f"one pass over all profiles: {total:.1f} ms ({verdict} the {TARGET_MS:.0f} ms target)")
    if not options.pass_clusters:
        return
    print()
    print(f"a profile's whole pass (profiles.decide), median of {options.repeat}")
    print(f"{'clusters':>9}  {'spec.rollout':<30}{'writes':>7}{'ms':>9}")
    waves = {"canary": 10, "maxUnavailable": "5%", "byDatacenter": True}
    for count in options.pass_clusters:
        rows = (("none: every cluster at once", None), ("canary 10, 5%, byDatacenter", waves))
        for label, rollout in rows:
            ms, writes = time_pass(count, rollout, options.repeat)
            print(f"{count:>9,}  {label:<30}{writes:>7}{ms:>9.1f}")


if __name__ == "__main__":
    main()
