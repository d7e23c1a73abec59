from fleet.fleetview import rows
from fleet.status import backoff_seconds, health_poll_seconds, summary_message, worst


def test_backoff_grows_exponentially_and_is_capped():
    delays = [backoff_seconds(n) for n in range(1, 10)]
    assert delays[0] == 2
    assert delays == sorted(delays)
    assert max(delays) == 120
    polls = [health_poll_seconds(n) for n in range(1, 10)]
    assert polls[0] == 2 and max(polls) == 30 and polls == sorted(polls)


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
