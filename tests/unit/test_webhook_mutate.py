from __future__ import annotations

import copy
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.nodecache import Assignment, parse_assignments
from fleet.webhook.catalogue import (
    CATALOGUE_NAME,
    CATALOGUE_NAMESPACE,
    Rejected,
    env_name,
    ready_label,
)
from fleet.webhook.mutate import (
    AFFINITIES,
    SOURCES,
    ModelPolicy,
    mount_models,
    names,
    volume_name,
)

LLAMA_DIGEST = "sha256:" + "a" * 64
BGE_DIGEST = "sha256:" + "b" * 64
LONG = "m" + "-x" * 30 + "1"  # 62 characters: a DNS label whose volume name needs cutting
LONG_DIGEST = "sha256:" + "c" * 64
DATA = {
    "llama-3-8b": json.dumps(
        {
            "reference": f"dc1.registry:5000/models/llama@{LLAMA_DIGEST}",
            "digest": LLAMA_DIGEST,
            "sizeBytes": 16_000_000_000,
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
        }
    ),
    "bge-small": json.dumps(
        {"reference": f"dc1.registry:5000/models/bge@{BGE_DIGEST}", "digest": BGE_DIGEST}
    ),
    LONG: json.dumps({"reference": f"r/long@{LONG_DIGEST}", "digest": LONG_DIGEST}),
}
CATALOGUE, _ = parse_assignments(DATA)
POLICY = ModelPolicy()
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
READY_IN = "In"


def pod(annotations: dict[str, str] | None = None, **spec: object) -> dict:
    body: dict = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "serve-", "namespace": "team-a"},
        "spec": {"containers": [{"name": "app", "image": "serve:1"}], **spec},
    }
    if annotations is not None:
        body["metadata"]["annotations"] = annotations
    return body


def ready(name: str) -> dict:
    return {"key": f"model.fleet.mlops.dev/{name}", "operator": READY_IN, "values": ["ready"]}


# The catalogue


def test_the_catalogue_is_read_with_its_problems_reported():
    data = {
        **DATA,
        "Bad_Name": DATA["bge-small"],
        "not-json": "{",
        "no-digest": json.dumps({"reference": "r/x:1"}),
        "a-list": "[1, 2]",
        "moved": json.dumps({"reference": f"r/x@{BGE_DIGEST}", "digest": LLAMA_DIGEST}),
        "huge": json.dumps({"reference": "r/x", "digest": BGE_DIGEST, "sizeBytes": "big"}),
        "odd-selector": json.dumps(
            {"reference": "r/x", "digest": BGE_DIGEST, "nodeSelector": {"a": 1}}
        ),
    }
    models, problems = parse_assignments(data)
    assert sorted(models) == sorted(["llama-3-8b", "bge-small", LONG])
    assert models["llama-3-8b"] == Assignment(
        name="llama-3-8b",
        reference=f"dc1.registry:5000/models/llama@{LLAMA_DIGEST}",
        digest=LLAMA_DIGEST,
        size_bytes=16_000_000_000,
        node_selector={"nvidia.com/gpu.present": "true"},
    )
    assert models["bge-small"].node_selector == {}
    where = f"{CATALOGUE_NAMESPACE}/{CATALOGUE_NAME} key"
    assert problems == [
        f"{where} 'Bad_Name': not a model name (a DNS label of at most 63 characters)",
        f"{where} 'a-list': not a JSON object",
        f"{where} 'huge': sizeBytes is not a whole number of bytes",
        f"{where} 'moved': reference is pinned at {BGE_DIGEST}, digest says {LLAMA_DIGEST}",
        f"{where} 'no-digest': needs a digest (algorithm:hex)",
        f"{where} 'not-json': not JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))",
        f"{where} 'odd-selector': nodeSelector is not a map of strings",
    ]


def test_assignments_can_be_hashed():
    assert len({CATALOGUE["llama-3-8b"], CATALOGUE["llama-3-8b"]}) == 1


@pytest.mark.parametrize(
    ("model", "variable"),
    [
        ("llama-3-8b", "MODEL_LLAMA_3_8B_PATH"),
        ("bge.small", "MODEL_BGE_SMALL_PATH"),
        ("x", "MODEL_X_PATH"),
    ],
)
def test_env_names(model, variable):
    assert env_name(model) == variable


def test_ready_label():
    assert ready_label("llama-3-8b") == "model.fleet.mlops.dev/llama-3-8b"


def test_annotation_lists_are_trimmed_and_deduplicated():
    assert names(" llama-3-8b, ,bge-small,llama-3-8b,, ") == ["llama-3-8b", "bge-small"]
    assert names("") == []


# Mounting


def test_one_model_from_the_node_cache():
    given_pod = pod({"models.fleet.mlops.dev/use": "llama-3-8b"})
    path = "/models/llama-3-8b"
    assert mount_models(given_pod, CATALOGUE, POLICY) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "serve-",
            "namespace": "team-a",
            "annotations": {
                "models.fleet.mlops.dev/use": "llama-3-8b",
                "models.fleet.mlops.dev/mounted": f"llama-3-8b@{LLAMA_DIGEST}",
            },
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "serve:1",
                    "volumeMounts": [
                        {"name": "model-llama-3-8b", "mountPath": path, "readOnly": True}
                    ],
                    "env": [
                        {"name": "MODEL_LLAMA_3_8B_PATH", "value": path},
                        {"name": "MODEL_PATH", "value": path},
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "model-llama-3-8b",
                    "hostPath": {
                        "path": "/var/lib/fleet/model-cache/models/llama-3-8b",
                        "type": "Directory",
                    },
                }
            ],
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 100, "preference": {"matchExpressions": [ready("llama-3-8b")]}}
                    ]
                }
            },
        },
    }


def test_two_models_get_no_model_path_and_one_preference_each():
    policy = ModelPolicy(preferred_weight=40, mount_root="/mnt/m", cache_root="/cache")
    given_pod = pod({"models.fleet.mlops.dev/use": "bge-small, llama-3-8b, bge-small"})
    result = mount_models(given_pod, CATALOGUE, policy)
    container = result["spec"]["containers"][0]
    assert container["env"] == [
        {"name": "MODEL_BGE_SMALL_PATH", "value": "/mnt/m/bge-small"},
        {"name": "MODEL_LLAMA_3_8B_PATH", "value": "/mnt/m/llama-3-8b"},
    ]
    assert [v["hostPath"]["path"] for v in result["spec"]["volumes"]] == [
        "/cache/models/bge-small",
        "/cache/models/llama-3-8b",
    ]
    assert result["spec"]["affinity"]["nodeAffinity"] == {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 40, "preference": {"matchExpressions": [ready("bge-small")]}},
            {"weight": 40, "preference": {"matchExpressions": [ready("llama-3-8b")]}},
        ]
    }
    assert result["metadata"]["annotations"]["models.fleet.mlops.dev/mounted"] == (
        f"bge-small@{BGE_DIGEST},llama-3-8b@{LLAMA_DIGEST}"
    )


def test_required_affinity_is_anded_into_every_term():
    zone_a = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
    by_field = {"key": "metadata.name", "operator": "In", "values": ["gpu-7"]}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [zone_a]},
                    {"matchFields": [by_field]},
                    {},
                ]
            }
        }
    }
    given_pod = pod(
        {
            "models.fleet.mlops.dev/use": "llama-3-8b,bge-small",
            "models.fleet.mlops.dev/affinity": "required",
        },
        affinity=affinity,
    )
    result = mount_models(given_pod, CATALOGUE, POLICY)
    models = [ready("llama-3-8b"), ready("bge-small")]
    assert result["spec"]["affinity"] == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [zone_a, *models]},
                    {"matchFields": [by_field], "matchExpressions": models},
                    # An empty term matches no node: given requirements it would match some.
                    {},
                ]
            }
        }
    }


def test_required_affinity_makes_the_term_when_there_is_none():
    given_pod = pod(
        {"models.fleet.mlops.dev/use": "bge-small", "models.fleet.mlops.dev/affinity": "required"},
        affinity={"podAntiAffinity": {"x": 1}},
    )
    result = mount_models(given_pod, CATALOGUE, POLICY)
    assert result["spec"]["affinity"] == {
        "podAntiAffinity": {"x": 1},
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [ready("bge-small")]}]
            }
        },
    }


def test_image_volumes_mount_the_reference_without_affinity():
    policy = ModelPolicy(image_volumes=True, kubernetes_version="v1.35.0")
    given_pod = pod(
        {"models.fleet.mlops.dev/use": "bge-small", "models.fleet.mlops.dev/source": "image"}
    )
    result = mount_models(given_pod, CATALOGUE, policy)
    assert result["spec"]["volumes"] == [
        {
            "name": "model-bge-small",
            "image": {
                "reference": f"dc1.registry:5000/models/bge@{BGE_DIGEST}",
                "pullPolicy": "IfNotPresent",
            },
        }
    ]
    assert "affinity" not in result["spec"]
    assert result["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "model-bge-small", "mountPath": "/models/bge-small", "readOnly": True}
    ]


def test_image_volumes_are_refused_where_the_cluster_has_none():
    policy = ModelPolicy(kubernetes_version="v1.33.4")
    given_pod = pod(
        {"models.fleet.mlops.dev/use": "bge-small", "models.fleet.mlops.dev/source": "image"}
    )
    with pytest.raises(Rejected) as refused:
        mount_models(given_pod, CATALOGUE, policy)
    assert refused.value.message == (
        "models.fleet.mlops.dev/source: image needs image volumes (Kubernetes 1.35 or later); "
        "this cluster runs v1.33.4 and does not offer them. Use models.fleet.mlops.dev/source: "
        "cache"
    )
    assert str(refused.value) == refused.value.message


def test_every_unknown_model_is_named_at_once():
    given_pod = pod({"models.fleet.mlops.dev/use": "mistral, bge-small, gpt-2"})
    with pytest.raises(Rejected) as refused:
        mount_models(given_pod, CATALOGUE, POLICY)
    assert refused.value.message == (
        f"unknown models 'mistral', 'gpt-2'; this cluster knows: bge-small, llama-3-8b, {LONG}"
    )


def test_a_cluster_without_models_says_so():
    with pytest.raises(Rejected) as refused:
        mount_models(pod({"models.fleet.mlops.dev/use": "bge-small"}), {}, POLICY)
    assert refused.value.message == "unknown model 'bge-small'; this cluster knows: none"


@pytest.mark.parametrize(
    ("annotation", "value", "message"),
    [
        (
            "models.fleet.mlops.dev/affinity",
            "strict",
            "models.fleet.mlops.dev/affinity must be one of preferred, required, not 'strict'",
        ),
        (
            "models.fleet.mlops.dev/source",
            "s3",
            "models.fleet.mlops.dev/source must be one of cache, image, not 's3'",
        ),
    ],
)
def test_unknown_annotation_values_are_refused(annotation, value, message):
    given_pod = pod({"models.fleet.mlops.dev/use": "bge-small", annotation: value})
    with pytest.raises(Rejected, match=re.escape(message)):
        mount_models(given_pod, CATALOGUE, POLICY)


def test_only_the_named_containers_get_the_model():
    given_pod = pod(
        {
            "models.fleet.mlops.dev/use": "bge-small",
            "models.fleet.mlops.dev/containers": "warm, app",
        },
        containers=[{"name": "app"}, {"name": "proxy"}],
        initContainers=[{"name": "warm"}, {"name": "setup"}],
    )
    result = mount_models(given_pod, CATALOGUE, POLICY)
    spec = result["spec"]
    mounted = [
        c["name"] for c in spec["containers"] + spec["initContainers"] if "volumeMounts" in c
    ]
    assert mounted == ["app", "warm"]
    assert "env" not in spec["containers"][1]


def test_init_containers_are_left_out_by_default():
    given_pod = pod(
        {"models.fleet.mlops.dev/use": "bge-small"},
        containers=[{"name": "app"}, {"name": "proxy"}],
        initContainers=[{"name": "setup"}],
    )
    result = mount_models(given_pod, CATALOGUE, POLICY)
    assert [len(c["volumeMounts"]) for c in result["spec"]["containers"]] == [1, 1]
    assert result["spec"]["initContainers"] == [{"name": "setup"}]


def test_an_unknown_container_is_refused():
    given_pod = pod(
        {"models.fleet.mlops.dev/use": "bge-small", "models.fleet.mlops.dev/containers": "ap,db"}
    )
    with pytest.raises(Rejected) as refused:
        mount_models(given_pod, CATALOGUE, POLICY)
    assert refused.value.message == (
        "models.fleet.mlops.dev/containers names unknown containers 'ap', 'db'; the pod has: app"
    )


def test_the_authors_environment_wins():
    mine = [{"name": "MODEL_PATH", "value": "/data/llama"}, {"name": "HOME", "value": "/h"}]
    given_pod = pod(
        {"models.fleet.mlops.dev/use": "llama-3-8b"},
        containers=[{"name": "app", "env": mine}],
    )
    result = mount_models(given_pod, CATALOGUE, POLICY)
    assert result["spec"]["containers"][0]["env"] == [
        *mine,
        {"name": "MODEL_LLAMA_3_8B_PATH", "value": "/models/llama-3-8b"},
    ]


def test_another_volume_of_the_same_name_is_refused():
    given_pod = pod(
        {"models.fleet.mlops.dev/use": "bge-small"},
        volumes=[{"name": "model-bge-small", "emptyDir": {}}],
    )
    with pytest.raises(Rejected) as refused:
        mount_models(given_pod, CATALOGUE, POLICY)
    assert refused.value.message == (
        "the pod already has a volume named 'model-bge-small', "
        "and it is not the one fleet adds for model 'bge-small'"
    )


@pytest.mark.parametrize("path", ["/models/bge-small", "/models/bge-small/"])
def test_another_mount_at_the_same_path_is_refused(path):
    given_pod = pod(
        {"models.fleet.mlops.dev/use": "bge-small"},
        containers=[{"name": "app", "volumeMounts": [{"name": "data", "mountPath": path}]}],
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    with pytest.raises(Rejected) as refused:
        mount_models(given_pod, CATALOGUE, POLICY)
    assert refused.value.message == (
        "container 'app' already mounts volume 'data' at '/models/bge-small', "
        "where fleet mounts model 'bge-small'"
    )


@pytest.mark.parametrize(
    "annotations", [None, {}, {"other": "x"}, {"models.fleet.mlops.dev/use": " , "}]
)
def test_a_pod_without_models_comes_back_unchanged_as_a_copy(annotations):
    given_pod = pod(annotations)
    result = mount_models(given_pod, CATALOGUE, POLICY)
    assert result == given_pod
    assert result is not given_pod
    assert result["spec"] is not given_pod["spec"]


def test_nulls_in_the_pod_are_filled_in():
    given_pod = pod({"models.fleet.mlops.dev/use": "bge-small"}, volumes=None, affinity=None)
    given_pod["spec"]["containers"][0].update(env=None, volumeMounts=None)
    result = mount_models(given_pod, CATALOGUE, POLICY)
    assert len(result["spec"]["volumes"]) == 1
    assert len(result["spec"]["containers"][0]["env"]) == 2


def test_long_model_names_give_valid_distinct_volume_names():
    twin = LONG[:-1] + "2"
    assert len(f"model-{LONG}") > 63
    made = {volume_name(LONG), volume_name(twin)}
    assert len(made) == 2
    assert all(DNS_LABEL.match(name) and len(name) <= 63 for name in made)
    assert volume_name("bge-small") == "model-bge-small"
    result = mount_models(pod({"models.fleet.mlops.dev/use": LONG}), CATALOGUE, POLICY)
    assert result["spec"]["volumes"][0]["name"] == volume_name(LONG)
    assert result["spec"]["containers"][0]["volumeMounts"][0]["name"] == volume_name(LONG)


@given(st.text(alphabet="abc-", min_size=1, max_size=63))
def test_volume_names_are_dns_labels(suffix):
    name = f"a{suffix}"[:62] + "z"
    made = volume_name(name)
    assert len(made) <= 63
    assert DNS_LABEL.match(made)


def test_a_preference_weight_out_of_range_is_refused_at_once():
    with pytest.raises(ValueError, match="101"):
        ModelPolicy(preferred_weight=101)


# Properties: every pod the webhook may see

MODEL_NAMES = st.sampled_from([*sorted(CATALOGUE), "bge-small"])
ENV = st.fixed_dictionaries(
    {"name": st.sampled_from(["MODEL_PATH", "MODEL_BGE_SMALL_PATH", "HOME"]), "value": st.just("x")}
)
EXPRESSION = st.fixed_dictionaries(
    {
        "key": st.sampled_from(["zone", "model.fleet.mlops.dev/bge-small"]),
        "operator": st.just("In"),
        "values": st.sampled_from([["a"], ["ready"]]),
    }
)
TERM = st.one_of(
    st.just({}), st.fixed_dictionaries({"matchExpressions": st.lists(EXPRESSION, max_size=2)})
)


@st.composite
def pods(draw: st.DrawFn) -> dict:
    names_used = draw(st.lists(MODEL_NAMES, min_size=1, max_size=4))
    annotations = {"models.fleet.mlops.dev/use": " , ".join(names_used)}
    annotations["models.fleet.mlops.dev/affinity"] = draw(st.sampled_from(AFFINITIES))
    annotations["models.fleet.mlops.dev/source"] = draw(st.sampled_from(SOURCES))
    containers = [
        {"name": name, "env": draw(st.lists(ENV, max_size=2, unique_by=lambda e: e["name"]))}
        for name in draw(st.lists(st.sampled_from(["app", "proxy"]), min_size=1, unique=True))
    ]
    spec: dict = {"containers": containers}
    if draw(st.booleans()):
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": draw(st.lists(TERM, min_size=1, max_size=3))
                }
            }
        }
    return {"metadata": {"annotations": annotations}, "spec": spec}


PERMISSIVE = ModelPolicy(image_volumes=True)


@given(pods())
def test_mounting_twice_changes_nothing_more_and_leaves_the_input_alone(given_pod):
    before = copy.deepcopy(given_pod)
    once = mount_models(given_pod, CATALOGUE, PERMISSIVE)
    assert given_pod == before
    assert mount_models(once, CATALOGUE, PERMISSIVE) == once
    for volume in once["spec"]["volumes"]:
        assert DNS_LABEL.match(volume["name"])


@given(pods())
def test_every_container_gets_every_model_and_keeps_its_own_environment(given_pod):
    result = mount_models(given_pod, CATALOGUE, PERMISSIVE)
    used = names(given_pod["metadata"]["annotations"]["models.fleet.mlops.dev/use"])
    for before, after in zip(
        given_pod["spec"]["containers"], result["spec"]["containers"], strict=True
    ):
        assert after["env"][: len(before["env"])] == before["env"]
        assert [m["mountPath"] for m in after["volumeMounts"]] == [f"/models/{n}" for n in used]
        defined = {e["name"] for e in after["env"]}
        assert {env_name(n) for n in used} <= defined
        assert ("MODEL_PATH" in defined) == (
            len(used) == 1 or "MODEL_PATH" in {e["name"] for e in before["env"]}
        )


@given(pods())
def test_required_affinity_holds_every_model_in_every_term(given_pod):
    annotations = given_pod["metadata"]["annotations"]
    annotations["models.fleet.mlops.dev/affinity"] = "required"
    annotations["models.fleet.mlops.dev/source"] = "cache"
    result = mount_models(given_pod, CATALOGUE, PERMISSIVE)
    used = names(annotations["models.fleet.mlops.dev/use"])
    required = result["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    given_terms = (
        given_pod["spec"]
        .get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    wanted = [ready(name) for name in used]
    if not given_terms:
        assert required["nodeSelectorTerms"] == [{"matchExpressions": wanted}]
        return
    for before, after in zip(given_terms, required["nodeSelectorTerms"], strict=True):
        if not before.get("matchExpressions"):
            assert after == before  # matches no node, and must go on matching none
        else:
            mine = before["matchExpressions"]
            assert after["matchExpressions"] == mine + [e for e in wanted if e not in mine]


def test_in_shared_volume_mode_every_model_is_a_subpath_of_the_claim_and_no_node_is_preferred():
    policy = ModelPolicy(claim="models-rwx")
    made = mount_models(
        pod({"models.fleet.mlops.dev/use": "llama-3-8b,bge-small"}), CATALOGUE, policy
    )
    assert made["spec"]["volumes"] == [
        {
            "name": "fleet-models",
            "persistentVolumeClaim": {"claimName": "models-rwx", "readOnly": True},
        }
    ]
    assert made["spec"]["containers"][0]["volumeMounts"] == [
        {
            "name": "fleet-models",
            "mountPath": "/models/llama-3-8b",
            "readOnly": True,
            "subPath": "models/llama-3-8b",
        },
        {
            "name": "fleet-models",
            "mountPath": "/models/bge-small",
            "readOnly": True,
            "subPath": "models/bge-small",
        },
    ]
    assert "affinity" not in made["spec"]
    assert mount_models(made, CATALOGUE, policy) == made
