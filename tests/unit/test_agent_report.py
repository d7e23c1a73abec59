"""What a node agent decides to hold and to say on its Node: the rules one by one, then
the patch's fixed point over generated nodes (hypothesis)."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.agent.report import (
    FIRST_RETRY_SECONDS,
    LAST_RETRY_SECONDS,
    USE_ANNOTATION,
    backoff,
    in_use,
    node_patch,
    wanted,
)
from fleet.nodecache import READY, READY_LABEL_PREFIX, STATUS_ANNOTATION, Assignment

DIGEST = "sha256:" + "a" * 64
GPU = {"nvidia.com/gpu.present": "true"}
LLAMA = Assignment("llama", f"r/llama@{DIGEST}", DIGEST, 1, GPU)
BGE = Assignment("bge", f"r/bge@{DIGEST}", DIGEST, 1, {"pool": "small", **GPU})
ANYWHERE = Assignment("tiny", f"r/tiny@{DIGEST}", DIGEST, 1, {})
CATALOGUE = {"llama": LLAMA, "bge": BGE, "tiny": ANYWHERE}
STATUS = {"models": {"llama": {"phase": "Ready", "digest": DIGEST}}, "updated": "t1"}


def label(model: str) -> str:
    return f"{READY_LABEL_PREFIX}{model}"


def text(status: dict) -> str:
    return json.dumps(status, sort_keys=True, separators=(",", ":"))


def node(labels: dict[str, str] | None = None, status: str | None = None) -> dict:
    meta: dict = {"name": "n1", "labels": labels}
    if status is not None:
        meta["annotations"] = {STATUS_ANNOTATION: status}
    return {"metadata": meta}


# wanted


@pytest.mark.parametrize(
    ("labels", "names"),
    [
        ({}, {"tiny"}),
        (GPU, {"llama", "tiny"}),
        ({**GPU, "pool": "small", "zone": "a"}, {"llama", "bge", "tiny"}),
        ({"nvidia.com/gpu.present": "false", "pool": "small"}, {"tiny"}),
    ],
)
def test_a_node_wants_the_models_whose_selector_its_labels_match(labels, names):
    assert wanted(CATALOGUE, labels, every=False) == {n: CATALOGUE[n] for n in names}


def test_a_shared_volume_wants_every_model():
    assert wanted(CATALOGUE, {}, every=True) == CATALOGUE


def test_nothing_assigned_nothing_wanted():
    assert wanted({}, GPU, every=True) == {}


# in_use


def pod(use: str | None, phase: str | None = "Running") -> dict:
    body: dict = {"metadata": {"annotations": {} if use is None else {USE_ANNOTATION: use}}}
    if phase is not None:
        body["status"] = {"phase": phase}
    return body


def test_models_of_pods_not_finished_are_in_use():
    pods = [
        pod("llama"),
        pod("bge", phase="Pending"),
        pod("tiny", phase=None),
        pod("gone", phase="Succeeded"),
        pod("broken", phase="Failed"),
        pod(None),
        {"metadata": {"annotations": None}, "status": None},
        {},
    ]
    assert in_use(pods) == {"llama", "bge", "tiny"}


def test_names_are_split_on_commas_and_trimmed():
    assert in_use([pod(" llama , bge,,  ,tiny "), pod("llama")]) == {"llama", "bge", "tiny"}


def test_no_pods_no_models_in_use():
    assert in_use(iter([])) == set()


# node_patch


def test_missing_ready_labels_are_added_with_the_status():
    patch = node_patch(node(), ["llama", "bge"], STATUS)
    assert patch == {
        "metadata": {
            "labels": {label("llama"): READY, label("bge"): READY},
            "annotations": {STATUS_ANNOTATION: text(STATUS)},
        }
    }


def test_our_labels_for_models_not_ready_are_removed_and_others_left_alone():
    labels = {
        label("llama"): READY,
        label("bge"): READY,
        label("odd"): "yes",
        "kubernetes.io/hostname": "n1",
        "model.fleet.mlops.dev": "not-ours-no-slash",
        "other.example/llama": READY,
    }
    patch = node_patch(node(labels, text(STATUS)), ["llama"], STATUS)
    assert patch is not None
    assert patch["metadata"]["labels"] == {label("bge"): None, label("odd"): None}


def test_one_of_our_labels_with_another_value_is_set_ready():
    patch = node_patch(node({label("llama"): "no"}, text(STATUS)), ["llama"], STATUS)
    assert patch is not None
    assert patch["metadata"]["labels"] == {label("llama"): READY}


def test_nothing_to_say_is_no_patch():
    labels = {label("llama"): READY, "kubernetes.io/hostname": "n1"}
    assert node_patch(node(labels, text(STATUS)), ["llama"], STATUS) is None


def test_the_status_is_compared_as_json_not_as_text():
    written = json.dumps(STATUS, indent=2)  # another writer's spacing and key order
    assert node_patch(node({label("llama"): READY}, written), ["llama"], STATUS) is None


def test_the_time_the_status_was_written_does_not_count():
    later = {**STATUS, "updated": "t2"}
    assert node_patch(node({label("llama"): READY}, text(STATUS)), ["llama"], later) is None
    without = {k: v for k, v in STATUS.items() if k != "updated"}
    assert node_patch(node({label("llama"): READY}, text(STATUS)), ["llama"], without) is None


def test_a_changed_status_alone_is_patched_with_no_label_changes():
    pulling = {"models": {"llama": {"phase": "Pulling", "digest": DIGEST}}, "updated": "t2"}
    patch = node_patch(node({label("llama"): READY}, text(STATUS)), ["llama"], pulling)
    assert patch == {"metadata": {"labels": {}, "annotations": {STATUS_ANNOTATION: text(pulling)}}}


@pytest.mark.parametrize("written", [None, "", "not json"])
def test_a_missing_or_unreadable_status_is_written_again(written):
    patch = node_patch(node({label("llama"): READY}, written), ["llama"], STATUS)
    assert patch is not None
    assert patch["metadata"] == {"labels": {}, "annotations": {STATUS_ANNOTATION: text(STATUS)}}


def test_a_status_annotation_that_is_not_an_object_is_written_again():
    patch = node_patch(node({label("llama"): READY}, "[1]"), ["llama"], STATUS)
    assert patch is not None


def test_a_node_without_metadata_gets_everything():
    patch = node_patch({}, ["llama"], STATUS)
    assert patch is not None
    assert patch["metadata"]["labels"] == {label("llama"): READY}


models = st.sampled_from(["llama", "bge", "tiny", "e5", "qwen"])
values = st.sampled_from([READY, "no", ""])
other_keys = st.sampled_from(["kubernetes.io/hostname", "pool", "other.example/llama"])
statuses = st.fixed_dictionaries(
    {"models": st.dictionaries(models, st.sampled_from(["Ready", "Pulling", "Failed"]))},
    optional={"updated": st.sampled_from(["t1", "t2"]), "freeBytes": st.integers(0, 9)},
)


@st.composite
def nodes(draw: st.DrawFn) -> dict:
    labels = draw(st.dictionaries(models.map(label), values))
    labels |= draw(st.dictionaries(other_keys, values))
    written = draw(st.none() | statuses.map(text) | st.just("{"))
    return node(labels, written)


def merge(target: dict, patch: dict) -> dict:
    """RFC 7386 merge patch, as the API server applies one to a Node."""
    merged = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict):
            present = merged.get(key)
            merged[key] = merge(present if isinstance(present, dict) else {}, value)
        else:
            merged[key] = value
    return merged


@given(nodes(), st.sets(models), statuses, st.sampled_from(["t1", "t3"]))
def test_a_node_patched_once_needs_no_second_patch(given_node, ready, status, updated):
    patched = given_node
    patch = node_patch(given_node, ready, status)
    if patch is not None:
        patched = merge(given_node, patch)
    assert node_patch(patched, ready, {**status, "updated": updated}) is None
    labels = patched["metadata"]["labels"] or {}
    assert {k for k in labels if k.startswith(READY_LABEL_PREFIX)} == {label(m) for m in ready}
    assert all(labels[label(m)] == READY for m in ready)
    before = given_node["metadata"]["labels"] or {}
    others = {k: v for k, v in before.items() if not k.startswith(READY_LABEL_PREFIX)}
    assert {k: v for k, v in labels.items() if not k.startswith(READY_LABEL_PREFIX)} == others


# backoff


def test_the_first_retries_wait_the_first_delay_then_double():
    assert [backoff(n) for n in range(6)] == [10.0, 10.0, 20.0, 40.0, 80.0, 160.0]
    assert backoff(1) == FIRST_RETRY_SECONDS


def test_the_wait_grows_and_stops_at_the_last_delay():
    waits = [backoff(n) for n in range(1, 1000)]
    assert waits == sorted(waits)
    assert max(waits) == LAST_RETRY_SECONDS
    assert backoff(6) == LAST_RETRY_SECONDS
    assert all(isinstance(w, float) for w in waits)


def test_a_model_failing_for_days_still_waits_the_last_delay():
    assert backoff(1025) == LAST_RETRY_SECONDS
