from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.errors import PermanentError
from fleet.webhook.sharing import BadPolicy, SharingPolicy, apply_sharing, parse_sharing_policy

SHARED = {"key": "nvidia.com/gpu.shared", "operator": "Exists", "effect": "NoSchedule"}
POLICY = SharingPolicy()


def gpu_pod(resources: dict | None = None, **spec: object) -> dict:
    if resources is None:
        resources = {"limits": {"nvidia.com/gpu": "1"}}
    return {
        "metadata": {"name": "notebook", "namespace": "lab"},
        "spec": {
            "containers": [{"name": "jupyter", "image": "j:1", "resources": resources}],
            **spec,
        },
    }


# The policy's configuration


def test_an_empty_policy_is_the_default():
    assert parse_sharing_policy("") == SharingPolicy()
    assert SharingPolicy().tolerations == (SHARED,)


def test_a_policy_from_yaml():
    policy = parse_sharing_policy(
        """
priorityClassName: lab-gpu
tolerations:
  - {key: lab.example/gpu, operator: Equal, value: shared, effect: NoSchedule}
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute,
     tolerationSeconds: 60}
"""
    )
    assert policy == SharingPolicy(
        "lab-gpu",
        (
            {
                "key": "lab.example/gpu",
                "operator": "Equal",
                "value": "shared",
                "effect": "NoSchedule",
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 60,
            },
        ),
    )


def test_a_policy_from_json_keeps_the_default_tolerations():
    assert parse_sharing_policy('{"priorityClassName": "lab"}') == SharingPolicy("lab", (SHARED,))
    assert parse_sharing_policy('{"tolerations": []}') == SharingPolicy(tolerations=())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "priorityClass: x\nextra: 1\n",
            "GPU sharing policy: unknown fields 'extra', 'priorityClass' "
            "(it has priorityClassName, tolerations)",
        ),
        ("- a\n", "GPU sharing policy: not a mapping of fields"),
        ("priorityClassName: Lab_GPU\n", "priorityClassName is not a PriorityClass name"),
        ("tolerations: {key: x}\n", "tolerations is not a list"),
        ("tolerations: [x]\n", "tolerations[0] is not a mapping"),
        (
            "tolerations: [{key: x, operator: Exists, efect: NoSchedule}]\n",
            "tolerations[0]: unknown field 'efect'",
        ),
        ("tolerations: [{key: x, operator: In}]\n", "tolerations[0].operator must be one of"),
        (
            "tolerations: [{key: x, operator: Exists, value: y}]\n",
            "tolerations[0].value must be empty when operator is Exists",
        ),
        ("tolerations: [{value: y}]\n", "tolerations[0].key may be empty only when"),
        ("tolerations: [{key: x, effect: Never}]\n", "tolerations[0].effect must be one of"),
        (
            "tolerations: [{key: x, effect: NoSchedule, tolerationSeconds: 5}]\n",
            "tolerations[0].tolerationSeconds needs effect NoExecute",
        ),
        ("tolerations: [{key: x, value: 1}]\n", "tolerations[0].value is not a string"),
        ("priorityClassName: [\n", "GPU sharing policy: not YAML"),
    ],
)
def test_a_bad_policy_names_its_field(text, message):
    with pytest.raises(BadPolicy) as refused:
        parse_sharing_policy(text)
    assert message in str(refused.value)
    assert isinstance(refused.value, PermanentError)


# Applying it


def test_a_gpu_pod_gets_the_class_and_tolerations_and_loses_the_derived_fields():
    given_pod = gpu_pod(
        priority=0,
        preemptionPolicy="PreemptLowerPriority",
        tolerations=[{"key": "other", "operator": "Exists"}],
    )
    assert apply_sharing(given_pod, POLICY) == {
        "metadata": {
            "name": "notebook",
            "namespace": "lab",
            "annotations": {"gpu.fleet.mlops.dev/policy": "interactive"},
        },
        "spec": {
            "containers": given_pod["spec"]["containers"],
            "priorityClassName": "fleet-interactive-gpu",
            "tolerations": [{"key": "other", "operator": "Exists"}, SHARED],
        },
    }


def test_a_pod_with_a_class_of_its_own_keeps_it():
    given_pod = gpu_pod(priorityClassName="training", priority=1000)
    result = apply_sharing(given_pod, POLICY)
    assert result["spec"]["priorityClassName"] == "training"
    assert result["spec"]["priority"] == 1000
    assert result["spec"]["tolerations"] == [SHARED]
    assert result["metadata"]["annotations"] == {
        "gpu.fleet.mlops.dev/policy": "kept-priority-class"
    }


def test_tolerations_already_there_are_not_added_again():
    given_pod = gpu_pod(tolerations=[dict(SHARED)])
    assert apply_sharing(given_pod, POLICY)["spec"]["tolerations"] == [SHARED]


@pytest.mark.parametrize(
    "resources",
    [
        {"requests": {"nvidia.com/gpu": 1}},
        {"limits": {"nvidia.com/mig-1g.10gb": "2"}},
        {"requests": {"cpu": "1"}, "limits": {"nvidia.com/mig-3g.40gb": 1}},
    ],
)
def test_gpus_and_mig_slices_count(resources):
    assert apply_sharing(gpu_pod(resources), POLICY)["spec"]["priorityClassName"]


def test_a_gpu_init_container_counts():
    given_pod = gpu_pod({"limits": {"cpu": "1"}})
    given_pod["spec"]["initContainers"] = [
        {"name": "warm", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    ]
    assert apply_sharing(given_pod, POLICY)["spec"]["priorityClassName"]


@pytest.mark.parametrize(
    "resources",
    [
        {},
        {"limits": {"cpu": "2", "memory": "4Gi"}},
        {"limits": {"nvidia.com/gpu": "0"}},
        {"limits": {"amd.com/gpu": "1"}},
        {"limits": {"nvidia.com/gpu.shared": "1"}},
    ],
)
def test_other_pods_come_back_unchanged_as_a_copy(resources):
    given_pod = gpu_pod(resources, priority=0)
    result = apply_sharing(given_pod, POLICY)
    assert result == given_pod
    assert result is not given_pod


def test_the_policys_tolerations_are_not_shared_with_the_pod():
    result = apply_sharing(gpu_pod(), POLICY)
    result["spec"]["tolerations"][0]["key"] = "changed"
    assert POLICY.tolerations[0]["key"] == "nvidia.com/gpu.shared"


RESOURCE = st.sampled_from(["nvidia.com/gpu", "nvidia.com/mig-1g.5gb", "cpu"])
TOLERATION = st.sampled_from([SHARED, {"key": "other", "operator": "Exists"}])


@st.composite
def pods(draw: st.DrawFn) -> dict:
    spec: dict = {
        "containers": [
            {"name": f"c{i}", "resources": {"limits": {resource: "1"}}}
            for i, resource in enumerate(draw(st.lists(RESOURCE, min_size=1, max_size=3)))
        ]
    }
    if draw(st.booleans()):
        spec["priorityClassName"] = draw(st.sampled_from(["fleet-interactive-gpu", "batch"]))
    if draw(st.booleans()):
        spec["priority"] = 0
        spec["preemptionPolicy"] = "PreemptLowerPriority"
    if draw(st.booleans()):
        spec["tolerations"] = draw(st.lists(TOLERATION, unique_by=lambda t: t["key"]))
    return {"metadata": {"annotations": {"team": "lab"}}, "spec": spec}


@given(pods())
def test_applying_twice_changes_nothing_more_and_leaves_the_input_alone(given_pod):
    before = copy.deepcopy(given_pod)
    once = apply_sharing(given_pod, POLICY)
    assert given_pod == before
    assert apply_sharing(once, POLICY) == once


@given(pods())
def test_a_gpu_pod_always_ends_with_a_class_and_the_tolerations(given_pod):
    result = apply_sharing(given_pod, POLICY)
    gpu = any("cpu" not in c["resources"]["limits"] for c in given_pod["spec"]["containers"])
    if not gpu:
        assert result == given_pod
        return
    spec = result["spec"]
    assert spec["priorityClassName"] == given_pod["spec"].get(
        "priorityClassName", "fleet-interactive-gpu"
    )
    assert SHARED in spec["tolerations"]
    if "priorityClassName" not in given_pod["spec"]:
        assert "priority" not in spec
        assert "preemptionPolicy" not in spec
    assert result["metadata"]["annotations"]["team"] == "lab"
