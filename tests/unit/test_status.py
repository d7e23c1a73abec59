import datetime

import pytest

from fleet.fleetview import rows
from fleet.status import backoff_seconds, due, material, stamp, summary_message, worst

NOW = datetime.datetime(2026, 11, 23, 12, 0, 0, tzinfo=datetime.UTC)


def deployment(status=None, revision="r2", drift=180):
    return {
        "metadata": {"name": "p.gpu-01"},
        "spec": {"revision": revision, "driftIntervalSeconds": drift},
        "status": status or {},
    }


def ago(seconds):
    return stamp(NOW - datetime.timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("status", "last", "expected"),
    [
        ({}, None, "revision changed"),
        ({"appliedRevision": "r1", "phase": "Ready"}, 5, "revision changed"),
        (
            {"appliedRevision": "r2", "phase": "Ready"},
            None,
            "first look since the controller started",
        ),
        ({"appliedRevision": "r2", "phase": "Ready"}, 10, None),
        ({"appliedRevision": "r2", "phase": "Ready"}, 40, "probe"),
        ({"appliedRevision": "r2", "phase": "Ready"}, 400, "drift check"),
        ({"appliedRevision": "r2", "phase": "Applying"}, 0, None),
        ({"appliedRevision": "r2", "phase": "Applying"}, 5, "applying"),
        (
            {
                "appliedRevision": "r1",
                "phase": "Unreachable",
                "nextAttemptTime": stamp(NOW + datetime.timedelta(seconds=30)),
            },
            1,
            None,
        ),
        (
            {"appliedRevision": "r2", "phase": "Unreachable", "nextAttemptTime": ago(1)},
            1,
            "retry after Unreachable",
        ),
    ],
)
def test_when_a_deployment_is_due(status, last, expected):
    last_attempt = None if last is None else NOW - datetime.timedelta(seconds=last)
    assert due(deployment(status), NOW, last_attempt) == expected


def test_a_status_differing_only_in_attempt_time_is_not_worth_a_write():
    before = {"phase": "Ready", "lastAttemptTime": ago(60), "ready": "1/1"}
    assert material({**before, "lastAttemptTime": ago(0)}) == material(before)
    assert material({**before, "ready": "0/1"}) != material(before)


def test_backoff_grows_exponentially_and_is_capped():
    delays = [backoff_seconds(n) for n in range(1, 10)]
    assert delays[0] == 2
    assert delays == sorted(delays)
    assert max(delays) == 120


def test_worst_phase_and_summary_message():
    assert worst(["Ready", "Applying", "Failed", "Unreachable"]) == "Failed"
    assert worst([]) == "Ready"
    assert (
        summary_message(
            [
                {"name": "a", "phase": "Ready", "message": ""},
                {"name": "b", "phase": "Failed", "message": "boom"},
            ]
        )
        == "b: boom"
    )


def test_status_rows_join_clusters_with_their_deployments():
    cluster = {
        "metadata": {
            "name": "gpu-01",
            "namespace": "ns",
            "labels": {"fleet.mlops.dev/datacenter": "dc-1", "fleet.mlops.dev/gpu-count": "16"},
        },
        "spec": {},
        "status": {"phase": "Provisioned", "initialization": {"controlPlaneInitialized": True}},
    }
    paused = {
        "metadata": {"name": "gpu-02", "namespace": "ns", "labels": {}},
        "spec": {"paused": True},
        "status": {"phase": "Provisioned"},
    }
    deployments = [
        {
            "metadata": {"namespace": "ns"},
            "spec": {"cluster": "gpu-01", "profile": "base"},
            "status": {
                "phase": "Ready",
                "cluster": {"kubernetesVersion": "v1.35.4", "gpus": 16},
                "addons": [{"name": "a", "phase": "Ready"}],
            },
        },
        {
            "metadata": {"namespace": "ns"},
            "spec": {"cluster": "gpu-01", "profile": "extra"},
            "status": {
                "phase": "Unreachable",
                "message": "connection refused",
                "addons": [{"name": "b", "phase": "Unreachable"}],
            },
        },
    ]
    first, second = rows([paused, cluster], deployments)
    assert (first.name, first.kubernetes_version, first.gpus) == ("gpu-01", "v1.35.4", 16)
    assert (first.addons_ready, first.addons_total) == (1, 2)
    assert first.problems == ("extra: Unreachable: connection refused",)
    assert second.problems == ("paused: no add-ons are applied", "control plane not ready")
    assert second.to_json()["addonsTotal"] == 0
