"""A profile's pass with a rollout: revisions kept, clusters moved by the planner, the record.

`decide` is run against a small simulated API: what it creates starts at generation
1, what it patches goes up one, and `settle` reports deployments Ready as the
controller would once they are applied.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.api import (
    LABEL_CANARY,
    LABEL_DATACENTER,
    MOVED_AT_ANNOTATION,
    ROLLOUT_PAUSE_ANNOTATION,
    ROLLOUT_RESUME_ANNOTATION,
    ROLLOUT_UNDO_ANNOTATION,
)
from fleet.controller import rollouts
from fleet.controller.profiles import History, decide, status_patch
from fleet.revisions import parse_snapshot

from .test_profiles import cluster, profile

V1 = {"kind": "manifests", "templates": {"a.yaml": "v: 1"}}
V2 = {"kind": "manifests", "templates": {"a.yaml": "v: 2"}}
NOW = 1_000_000.0


class Fleet:
    """The management cluster as `decide` changes it: deployments, revisions, the record."""

    def __init__(self, clusters, body):
        self.clusters = clusters
        self.body = body
        self.deployments = {}
        self.snapshots = {}
        self.record = None
        self.now = NOW

    def history(self):
        return History(dict(self.snapshots), self.record, self.now)

    def sync(self, addon, annotations=None):
        body = self.body
        if annotations is not None:
            body = {**body, "metadata": {**body["metadata"], "annotations": annotations}}
        decision = decide(body, self.clusters, {"a": addon}, {}, self.deployments, self.history())
        if decision.snapshot is not None:
            found = parse_snapshot(
                {**decision.snapshot, "metadata": {**decision.snapshot["metadata"]}}
            )
            self.snapshots[found.hash] = found
        for name in decision.prune:
            self.snapshots = {h: s for h, s in self.snapshots.items() if s.name != name}
        for created in decision.create:
            created = {**created, "metadata": {**created["metadata"], "generation": 1}}
            self.deployments[created["metadata"]["name"]] = created
        for name, patch in decision.update.items():
            old = self.deployments[name]
            meta = {**old["metadata"], "generation": old["metadata"]["generation"] + 1}
            annotations = (patch.get("metadata") or {}).get("annotations")
            if annotations:
                meta["annotations"] = {**meta.get("annotations", {}), **annotations}
            self.deployments[name] = {**old, "metadata": meta, "spec": patch["spec"]}
        for name in decision.delete:
            del self.deployments[name]
        if "rollout" in decision.status:
            self.record = decision.status["rollout"]
        return decision

    def settle(self, clusters=None, phase="Ready", message=""):
        for d in self.deployments.values():
            if clusters is None or d["spec"]["cluster"] in clusters:
                d["status"] = {"phase": phase, "observedGeneration": d["metadata"]["generation"]}
                d["status"]["message"] = message

    def on(self):
        return {
            d["spec"]["cluster"]: d["spec"]["profileRevision"] for d in self.deployments.values()
        }

    def moving(self, target):
        return {
            d["spec"]["cluster"]
            for d in self.deployments.values()
            if d["spec"]["profileRevision"] == target
            and (d.get("status") or {}).get("observedGeneration") != d["metadata"]["generation"]
        }


def rolled(names, **rollout):
    return Fleet([cluster(n) for n in names], profile(rollout=rollout))


def complete(fleet, addon, passes=20):
    """Passes (each followed by every deployment reporting Ready) until Complete and still."""
    for _ in range(passes):
        decision = fleet.sync(addon)
        if fleet.record["phase"] == "Complete" and not (decision.update or decision.create):
            return fleet.record
        fleet.settle()
        fleet.now += 1
    raise AssertionError(f"no Complete after {passes} passes: {fleet.record}")


def test_without_a_rollout_every_cluster_moves_at_once_and_the_revision_is_kept():
    fleet = Fleet([cluster("c1"), cluster("c2")], profile())
    first = fleet.sync(V1)
    assert first.snapshot is not None and first.status["rollout"] is None
    v1 = first.status["revision"]
    assert set(fleet.on().values()) == {v1}
    second = fleet.sync(V2)
    v2 = second.status["revision"]
    assert v2 != v1 and set(fleet.on().values()) == {v2}
    assert all(MOVED_AT_ANNOTATION in p["metadata"]["annotations"] for p in second.update.values())
    assert set(fleet.snapshots) == {v1, v2}


def test_a_change_outside_the_addons_keeps_the_revision_and_moves_nothing():
    fleet = Fleet([cluster("c1")], profile())
    v1 = fleet.sync(V1).status["revision"]
    fleet.body = profile(selector={"matchExpressions": [{"key": "gpu", "operator": "Exists"}]})
    fleet.body["spec"]["rollout"] = {"maxUnavailable": 1}
    decision = fleet.sync(V1)
    assert decision.status["revision"] == v1 and decision.snapshot is None
    assert decision.update == {} and decision.create == []


def test_with_a_rollout_the_canary_moves_alone_first_and_the_record_says_so():
    fleet = rolled(["c1", "c2", "c3"], canary=1, maxUnavailable=2)
    complete(fleet, V1)
    decision = fleet.sync(V2)
    v2 = decision.status["revision"]
    assert fleet.on() == {"c1": v2, "c2": fleet.record["previous"], "c3": fleet.record["previous"]}
    record = decision.status["rollout"]
    assert (record["phase"], record["wave"], record["updated"]) == ("Progressing", "canary", 1)
    assert [w["clusters"] for w in record["waves"]] == [["c1"]]
    reasons = [reason for _, reason, _ in decision.rollout_events]
    assert reasons == ["RolloutStarted", "WaveStarted"]
    assert decision.requeue == pytest.approx(600.5)
    again = fleet.sync(V2)  # the canary is not Ready yet: nothing more moves
    assert again.update == {} and again.rollout_events == []
    fleet.settle({"c1"})
    fleet.now += 5
    after = fleet.sync(V2)
    assert sorted(after.update) == ["p.c2", "p.c3"]
    assert after.status["rollout"]["waves"][0]["completed"] == rollouts.precise(fleet.now)


def test_a_new_cluster_and_a_deployment_from_before_revisions_move_in_their_wave():
    fleet = rolled(["c1", "c2"], canary=1, maxUnavailable=1)
    v1 = complete(fleet, V1)["target"]
    fleet.deployments["p.c2"]["spec"].pop("profileRevision")
    fleet.clusters = [cluster("c1"), cluster("c2"), cluster("c3")]
    decision = fleet.sync(V1)
    assert decision.delete == [] and decision.create == []
    assert list(decision.update) == ["p.c2"]
    assert decision.update["p.c2"]["spec"]["profileRevision"] == v1
    fleet.settle()
    after = fleet.sync(V1)
    assert [d["spec"]["cluster"] for d in after.create] == ["c3"]


def test_a_paused_cluster_is_left_out_and_keeps_its_deployment():
    fleet = rolled(["c1", "c2"], maxUnavailable=2)
    v1 = complete(fleet, V1)["target"]
    fleet.clusters = [cluster("c1"), cluster("c2", paused=True)]
    decision = fleet.sync(V2)
    assert list(decision.update) == ["p.c1"] and fleet.on()["c2"] == v1
    assert decision.status["rollout"]["total"] == 1


def test_a_failed_canary_halts_and_undo_goes_back_once():
    fleet = rolled(["c1", "c2", "c3"], canary=1, maxUnavailable=1)
    v1 = complete(fleet, V1)["target"]
    v2 = complete(fleet, V2)["target"]
    undo = {ROLLOUT_UNDO_ANNOTATION: v2}
    decision = fleet.sync(V2, undo)
    record = decision.status["rollout"]
    assert (record["target"], record["previous"], record["wave"]) == (v1, v2, "canary")
    assert fleet.on()["c1"] == v1
    assert [r for _, r, _ in decision.rollout_events][:2] == ["RolloutUndo", "RolloutStarted"]
    for _ in range(6):
        fleet.settle()
        fleet.now += 1
        again = fleet.sync(V2, undo)
        assert "RolloutUndo" not in [r for _, r, _ in again.rollout_events]
    assert set(fleet.on().values()) == {v1} and fleet.record["phase"] == "Complete"

    v3 = {"kind": "manifests", "templates": {"a.yaml": "v: 3"}}
    fleet.sync(v3)
    fleet.settle({"c1"}, phase="Failed", message="a: ConfigMap x was refused")
    halted = fleet.sync(v3)
    record = halted.status["rollout"]
    assert (record["phase"], record["wave"], record["failingCluster"], record["reason"]) == (
        "Halted",
        "canary",
        "c1",
        "Failed: a: ConfigMap x was refused",
    )
    assert "cluster c1: Failed: a: ConfigMap x was refused" in halted.rollout_events[0][2]
    assert halted.update == {} and [r for _, r, _ in halted.rollout_events] == ["RolloutHalted"]
    assert fleet.sync(v3).rollout_events == []


def test_a_pause_by_annotation_holds_until_it_goes_and_resume_lifts_the_pause_after_canary():
    fleet = rolled(["c1", "c2", "c3"], canary=1, maxUnavailable=1, pauseAfterCanary=True)
    assert [d["spec"]["cluster"] for d in fleet.sync(V1).create] == ["c1"]
    fleet.settle()
    paused = fleet.sync(V1)
    v1 = paused.status["revision"]
    assert paused.status["rollout"]["phase"] == "Paused" and paused.create == []
    assert [r for _, r, _ in paused.rollout_events] == ["WaveCompleted", "RolloutPaused"]
    held = {ROLLOUT_PAUSE_ANNOTATION: "true", ROLLOUT_RESUME_ANNOTATION: v1}
    still = fleet.sync(V1, held)
    assert still.create == [] and still.status["rollout"]["pausedByUser"] is True
    going = fleet.sync(V1, {ROLLOUT_RESUME_ANNOTATION: v1})
    assert [d["spec"]["cluster"] for d in going.create] == ["c2"]
    assert going.status["rollout"]["phase"] == "Progressing"


def test_revisions_beyond_the_history_limit_go_but_never_one_in_use():
    fleet = Fleet([cluster("c1"), cluster("c2")], profile(revisionHistoryLimit=2))
    hashes = []
    for version in range(5):
        addon = {"kind": "manifests", "templates": {"a.yaml": f"v: {version}"}}
        hashes.append(fleet.sync(addon).status["revision"])
        fleet.settle()
        if version == 0:  # c2 stays on the first revision from now on
            fleet.clusters = [cluster("c1"), cluster("c2", paused=True)]
    assert set(fleet.snapshots) == {hashes[0], *hashes[-3:]}
    assert fleet.on() == {"c1": hashes[-1], "c2": hashes[0]}


def test_a_bad_rollout_spec_is_reported_with_its_field():
    decision = decide(profile(rollout={"maxUnavailable": "0%"}), [cluster("c1")], {"a": V1}, {}, {})
    condition = decision.status["conditions"][0]
    assert condition["reason"] == "InvalidSpec"
    assert "spec.rollout.maxUnavailable" in condition["message"]
    assert decision.create == []


def test_a_status_null_the_api_dropped_is_not_a_change():
    current = {"rollout": {"phase": "Progressing", "wave": "canary"}}
    wanted = {"rollout": {"phase": "Progressing", "wave": "canary", "completedAt": None}}
    assert status_patch(current, wanted) is None
    wanted["rollout"]["phase"] = "Complete"
    assert status_patch(current, wanted) == wanted


def test_a_deployment_ready_at_an_older_generation_is_in_flight():
    body = {
        "metadata": {
            "generation": 3,
            "annotations": {MOVED_AT_ANNOTATION: "2026-01-01T00:00:00.5Z"},
        },
        "spec": {"profileRevision": "r2"},
        "status": {"phase": "Ready", "observedGeneration": 2},
    }
    state = rollouts.cluster_state(cluster("c1"), body)
    assert (state.revision, state.ready, state.failed) == ("r2", False, False)
    assert state.since == pytest.approx(1767225600.5)
    body["status"]["observedGeneration"] = 3
    assert rollouts.cluster_state(cluster("c1"), body).ready


fleets = st.lists(
    st.tuples(st.sampled_from(["dc-1", "dc-2", "dc-3"]), st.booleans()), min_size=1, max_size=12
)


@settings(max_examples=40, deadline=None)
@given(fleets, st.integers(1, 4), st.booleans(), st.integers(0, 2))
def test_through_decide_the_budget_holds_canaries_lead_and_every_cluster_arrives(
    shape, budget, by_datacenter, canary
):
    clusters = [
        cluster(
            f"c{i:02d}",
            labels={"gpu": "yes", LABEL_DATACENTER: dc, **({LABEL_CANARY: "true"} if flag else {})},
        )
        for i, (dc, flag) in enumerate(shape)
    ]
    rollout = {"canary": canary, "maxUnavailable": budget, "byDatacenter": by_datacenter}
    fleet = Fleet(clusters, profile(rollout=rollout))
    complete(fleet, V1, passes=3 * len(clusters) + 5)
    flagged = {c.name for c in clusters if c.labels.get(LABEL_CANARY)}
    decision = fleet.sync(V2)
    target = decision.status["revision"]
    if flagged and len(flagged) >= canary:
        assert fleet.moving(target) <= flagged
    for _ in range(3 * len(clusters) + 5):
        assert len(fleet.moving(target)) <= budget
        fleet.settle()
        fleet.now += 1
        fleet.sync(V2)
    assert set(fleet.on().values()) == {target}
    assert fleet.record["phase"] == "Complete"
