import pytest

from fleet.health import FAILED, PROGRESSING, READY, Health, health, summarize


@pytest.mark.parametrize(
    ("body", "state"),
    [
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 2},
                "spec": {"replicas": 2},
                "status": {"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2},
            },
            READY,
        ),
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 3},
                "spec": {"replicas": 2},
                "status": {"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2},
            },
            PROGRESSING,
        ),
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 1},
                "spec": {"replicas": 1},
                "status": {
                    "observedGeneration": 1,
                    "conditions": [
                        {
                            "type": "Progressing",
                            "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                        }
                    ],
                },
            },
            FAILED,
        ),
        (
            {
                "kind": "DaemonSet",
                "metadata": {"generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "desiredNumberScheduled": 3,
                    "updatedNumberScheduled": 3,
                    "numberAvailable": 2,
                },
            },
            PROGRESSING,
        ),
        (
            {
                "kind": "DaemonSet",
                "metadata": {"generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "desiredNumberScheduled": 3,
                    "updatedNumberScheduled": 3,
                    "numberAvailable": 3,
                },
            },
            READY,
        ),
        (
            {"kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}},
            READY,
        ),
        (
            {
                "kind": "Job",
                "status": {
                    "conditions": [
                        {"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}
                    ]
                },
            },
            FAILED,
        ),
        ({"kind": "CustomResourceDefinition", "status": {}}, PROGRESSING),
        (
            {
                "kind": "CustomResourceDefinition",
                "status": {"conditions": [{"type": "Established", "status": "True"}]},
            },
            READY,
        ),
        ({"kind": "Service", "spec": {"type": "ClusterIP"}}, READY),
        ({"kind": "Service", "spec": {"type": "LoadBalancer"}, "status": {}}, PROGRESSING),
        ({"kind": "ConfigMap"}, READY),
        ({"kind": "ClusterPolicy", "status": {"state": "ready"}}, READY),
        ({"kind": "ClusterPolicy", "status": {"state": "notReady"}}, PROGRESSING),
        ({"kind": "ClusterPolicy"}, PROGRESSING),
    ],
)
def test_rules(body, state):
    assert health(body).state == state


def test_summary_prefers_failures_then_progress():
    states = [
        ("ConfigMap/a", Health(READY)),
        ("Deployment/b", Health(PROGRESSING, "1/2")),
        ("Job/c", Health(FAILED, "boom")),
    ]
    assert summarize(states) == Health(FAILED, "Job/c: boom")
    assert summarize(states[:2]) == Health(PROGRESSING, "Deployment/b: 1/2")
    assert summarize(states[:1]).ready
