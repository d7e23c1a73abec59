"""Selection decisions: pause means hands off, not-ready keeps add-ons, big removals wait."""

from hypothesis import given
from hypothesis import strategies as st

from fleet.api import CLUSTER_FINALIZER, CONFIRM_REMOVAL_ANNOTATION
from fleet.api.models import Cluster
from fleet.controller.profiles import decide, removal_blocked, removal_token


def cluster(
    name, labels=None, paused=False, ready=True, deleting=False, finalizers=(CLUSTER_FINALIZER,)
):
    return Cluster(
        name=name,
        namespace="ns",
        uid=f"u-{name}",
        labels=labels if labels is not None else {"gpu": "yes"},
        annotations={},
        paused=paused,
        deleting=deleting,
        control_plane_ready=ready,
        endpoint="",
        topology={},
        finalizers=tuple(finalizers),
        resource_version="1",
    )


def profile(selector=None, annotations=None, **spec):
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "pu",
            "generation": 1,
            "annotations": annotations or {},
        },
        "spec": {
            "clusterSelector": selector
            if selector is not None
            else {"matchLabels": {"gpu": "yes"}},
            "addons": [{"name": "a"}],
            **spec,
        },
    }


def existing_for(body, clusters):
    first = decide(body, clusters, {"a": {"kind": "manifests"}}, {}, {})
    return {d["metadata"]["name"]: d for d in first.create}


def test_every_matched_cluster_gets_a_deployment_ready_or_not():
    clusters = [cluster("c1"), cluster("c2", ready=False), cluster("c3", labels={})]
    decision = decide(profile(), clusters, {"a": {}}, {}, {})
    assert sorted(d["spec"]["cluster"] for d in decision.create) == ["c1", "c2"]
    assert decision.status["matchedClusters"] == ["c1", "c2"]


def test_a_paused_cluster_keeps_its_deployment_unchanged_even_when_the_profile_changes():
    clusters = [cluster("c1"), cluster("c2")]
    existing = existing_for(profile(), clusters)
    changed = profile(syncMode="OneTime")
    paused = [cluster("c1"), cluster("c2", paused=True)]
    decision = decide(changed, paused, {"a": {}}, {}, existing)
    assert list(decision.update) == ["p.c1"]
    assert decision.delete == []
    unlabelled = decide(
        changed, [cluster("c1"), cluster("c2", paused=True, labels={})], {"a": {}}, {}, existing
    )
    assert unlabelled.delete == []


def test_a_cluster_that_is_not_ready_keeps_its_addons():
    clusters = [cluster("c1"), cluster("c2")]
    existing = existing_for(profile(), clusters)
    decision = decide(
        profile(),
        [cluster("c1"), cluster("c2", ready=False)],
        {"a": {"kind": "manifests"}},
        {},
        existing,
    )
    assert decision.delete == [] and decision.update == {}


def test_removing_many_clusters_waits_for_the_confirmation_of_exactly_that_set():
    clusters = [cluster(f"c{i}") for i in range(5)]
    existing = existing_for(profile(), clusters)
    typo = profile({"matchLabels": {"gpu": "yse"}})
    blocked = decide(typo, clusters, {"a": {}}, {}, existing)
    assert blocked.delete == []
    condition = next(c for c in blocked.status["conditions"] if c["type"] == "RemovalBlocked")
    assert "c0, c1, c2, c3, c4" in condition["message"]
    assert blocked.events and blocked.events[0][1] == "RemovalBlocked"
    token = removal_token(sorted(existing))
    confirmed = decide(
        profile({"matchLabels": {"gpu": "yse"}}, {CONFIRM_REMOVAL_ANNOTATION: token}),
        clusters,
        {"a": {}},
        {},
        existing,
    )
    assert sorted(confirmed.delete) == sorted(existing)
    stale = decide(
        profile({"matchLabels": {"gpu": "yse"}}, {CONFIRM_REMOVAL_ANNOTATION: "0" * 12}),
        clusters,
        {"a": {}},
        {},
        existing,
    )
    assert stale.delete == []


def test_deleted_clusters_lose_their_addons_without_confirmation():
    clusters = [cluster(f"c{i}") for i in range(4)]
    existing = existing_for(profile(), clusters)
    going = [cluster(f"c{i}", deleting=i < 3) for i in range(4)]
    assert sorted(decide(profile(), going, {"a": {}}, {}, existing).delete) == [
        "p.c0",
        "p.c1",
        "p.c2",
    ]


def test_finalizer_only_where_missing():
    clusters = [cluster("c1"), cluster("c2", finalizers=())]
    assert [c.name for c in decide(profile(), clusters, {"a": {}}, {}, {}).finalize] == ["c2"]


@given(total=st.integers(0, 2000), removals=st.integers(0, 2000), percent=st.integers(0, 100))
def test_one_removal_or_one_within_the_share_is_never_blocked_more_always_is(
    total, removals, percent
):
    removals = min(removals, total)
    blocked = removal_blocked([f"c{i}" for i in range(removals)], total, percent)
    if removals <= 1 or removals <= total * percent // 100:
        assert not blocked  # one cluster, or within the share
    else:
        assert blocked
