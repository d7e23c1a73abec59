import pytest

from fleet.api.models import parse_cluster
from fleet.select import InvalidSelector, matches, select

LABELS = {"fleet.mlops.dev/datacenter": "dc-1", "gpu": "h100"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, True),
        ({"matchLabels": {"gpu": "h100"}}, True),
        ({"matchLabels": {"gpu": "a100"}}, False),
        (
            {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100", "h100"]}]},
            True,
        ),
        ({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["h100"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, False),
        (
            {
                "matchLabels": {"gpu": "h100"},
                "matchExpressions": [
                    {"key": "fleet.mlops.dev/datacenter", "operator": "In", "values": ["dc-2"]}
                ],
            },
            False,
        ),
    ],
)
def test_label_selector_semantics(selector, expected):
    assert matches(selector, LABELS) is expected


def test_bad_operator_is_refused():
    with pytest.raises(InvalidSelector, match="operator 'Near'"):
        matches({"matchExpressions": [{"key": "gpu", "operator": "Near"}]}, LABELS)


def cluster(name, labels, *, ready=True, paused=False, deleting=False):
    meta = {"name": name, "namespace": "ns", "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return parse_cluster(
        {
            "metadata": meta,
            "spec": {"paused": paused},
            "status": {"initialization": {"controlPlaneInitialized": ready}},
        }
    )


def test_only_ready_unpaused_live_clusters_are_selected():
    clusters = [
        cluster("b", {"gpu": "h100"}),
        cluster("a", {"gpu": "h100"}),
        cluster("not-ready", {"gpu": "h100"}, ready=False),
        cluster("paused", {"gpu": "h100"}, paused=True),
        cluster("deleting", {"gpu": "h100"}, deleting=True),
        cluster("other", {"gpu": "t4"}),
    ]
    assert [c.name for c in select({"matchLabels": {"gpu": "h100"}}, clusters)] == ["a", "b"]


def test_readiness_is_read_from_v1beta1_and_v1beta2_status():
    v1beta1 = parse_cluster({"metadata": {"name": "x"}, "status": {"controlPlaneReady": True}})
    v1beta2 = parse_cluster(
        {
            "metadata": {"name": "x"},
            "status": {"conditions": [{"type": "ControlPlaneAvailable", "status": "True"}]},
        }
    )
    pending = parse_cluster({"metadata": {"name": "x"}, "status": {"phase": "Provisioning"}})
    assert v1beta1.control_plane_ready and v1beta2.control_plane_ready
    assert not pending.control_plane_ready
