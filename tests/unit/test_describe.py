"""`fleet describe`'s tree: the worst first, and every problem as fields."""

from fleet.describe import cluster_view, profile_view


def cluster(name="gpu-01", **status):
    return {
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {
            "namespace": "fleet",
            "name": name,
            "labels": {"fleet.mlops.dev/datacenter": "dc-1"},
        },
        "spec": {"topology": {"version": "v1.35.4"}},
        "status": {"phase": "Provisioned", "initialization": {"controlPlaneInitialized": True}}
        | status,
    }


def deployment(profile, cluster_name, phase, addons, message=""):
    return {
        "metadata": {"namespace": "fleet", "name": f"{profile}-{cluster_name}"},
        "spec": {"profile": profile, "cluster": cluster_name},
        "status": {
            "phase": phase,
            "message": message,
            "ready": f"{sum(a['phase'] == 'Ready' for a in addons)}/{len(addons)}",
            "cluster": {"kubernetesVersion": "v1.35.4", "gpus": 16, "gpuNodes": 2},
            "addons": addons,
        },
    }


READY = deployment(
    "a-good",
    "gpu-01",
    "Ready",
    [{"name": "cache", "phase": "Ready", "appliedRevision": "3f2a9c1b0e4d5a6b", "objects": 4}],
)
DEGRADED = deployment(
    "b-bad",
    "gpu-01",
    "Degraded",
    [
        {"name": "fine", "phase": "Ready", "objects": 1},
        {
            "name": "webhook",
            "phase": "Degraded",
            "message": "Deployment app/webhook: 0 of 1 available",
            "problems": [
                {
                    "object": "Deployment app/webhook",
                    "reason": "Progressing",
                    "message": "0 of 1 available",
                }
            ],
        },
    ],
)
MISSING = deployment(
    "c-missing",
    "gpu-01",
    "Failed",
    [{"name": "*", "phase": "Failed", "message": "Addon fleet/nope not found"}],
    message="Addon fleet/nope not found",
)


def test_the_worst_profile_and_add_on_come_first_and_problems_are_fields():
    view = cluster_view(
        cluster(), [READY, DEGRADED, MISSING, deployment("x", "gpu-02", "Ready", [])]
    )
    assert [d.profile for d in view.deployments] == ["c-missing", "b-bad", "a-good"]
    assert [a.name for a in view.deployments[1].addons] == ["webhook", "fine"]
    assert view.deployments[0].addons == ()  # a deployment-wide stop has no add-on rows
    assert (view.row.gpus, view.gpu_nodes, view.row.kubernetes_version) == (16, 2, "v1.35.4")
    assert [p.to_json() for p in view.problems] == [
        {
            "cluster": "fleet/gpu-01",
            "profile": "c-missing",
            "addon": "",
            "object": "",
            "reason": "Failed",
            "message": "Addon fleet/nope not found",
        },
        {
            "cluster": "fleet/gpu-01",
            "profile": "b-bad",
            "addon": "webhook",
            "object": "Deployment app/webhook",
            "reason": "Progressing",
            "message": "0 of 1 available",
        },
    ]
    assert view.to_json()["problems"] == [p.to_json() for p in view.problems]


def test_a_healthy_cluster_has_no_problems_and_a_paused_one_says_so():
    assert cluster_view(cluster(), [READY]).problems == []
    paused = cluster()
    paused["spec"]["paused"] = True
    problems = cluster_view(paused, [READY]).problems
    assert [(p.reason, p.profile) for p in problems] == [("Paused", "")]


def test_a_deployment_the_controller_never_reported_on_is_a_problem():
    silent = {
        "metadata": {"namespace": "fleet", "name": "p-gpu-01"},
        "spec": {"profile": "p", "cluster": "gpu-01"},
    }
    (problem,) = cluster_view(cluster(), [silent]).problems
    assert (problem.reason, problem.message) == ("Unknown", "the controller has not reported on it")


def test_a_profile_lists_its_clusters_the_worst_first():
    profile = {
        "metadata": {"namespace": "fleet", "name": "b-bad"},
        "spec": {"addons": [{"name": "fine"}, {"name": "webhook"}]},
        "status": {"matchedClusters": ["gpu-01", "gpu-03"]},
    }
    good = deployment("b-bad", "gpu-03", "Ready", [{"name": "fine", "phase": "Ready"}])
    view = profile_view(profile, [good, DEGRADED, READY])
    assert [d.cluster for d in view.deployments] == ["fleet/gpu-01", "fleet/gpu-03"]
    assert (view.addons, view.selected) == (("fine", "webhook"), 2)
    assert [p.object for p in view.problems] == ["Deployment app/webhook"]
