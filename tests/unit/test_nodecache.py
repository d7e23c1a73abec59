"""The catalogue contract: parsing its entries (every refusal by its message), an
assignment's text round-tripping (hypothesis), and counting a cluster's nodes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.nodecache import (
    ERRORS_KEPT,
    NODE_FAILED,
    NODE_NO_SPACE,
    NODE_PULLING,
    NODE_READY,
    READY,
    STATUS_ANNOTATION,
    Assignment,
    cacheable_name,
    cached_summary,
    cluster_entry,
    field_manager,
    parse_assignments,
    ready_label,
)

DIGEST = "sha256:" + "a" * 64
OLD_DIGEST = "sha256:" + "0" * 64
REFERENCE = f"dc1.registry:5000/models/llama@{DIGEST}"
GPU = {"nvidia.com/gpu.present": "true"}
WHERE = "fleet-system/fleet-models key"


def entry(**fields: object) -> str:
    return json.dumps({"reference": REFERENCE, "digest": DIGEST, **fields})


# parse_assignments: good entries


def test_a_full_entry_is_read_field_by_field():
    text = entry(
        sizeBytes=16_000_000_000,
        nodeSelector=GPU,
        caBundle="-----BEGIN CERTIFICATE-----\n",
        pullSecret="dc1-pull",
    )
    found, problems = parse_assignments({"llama-3-8b": text})
    assert problems == []
    assert found == {
        "llama-3-8b": Assignment(
            name="llama-3-8b",
            reference=REFERENCE,
            digest=DIGEST,
            size_bytes=16_000_000_000,
            node_selector=GPU,
            ca_pem="-----BEGIN CERTIFICATE-----\n",
            pull_secret="dc1-pull",  # noqa: S106 (a Secret's name)
        )
    }


def test_optional_fields_default_to_nothing():
    found, problems = parse_assignments({"bge": entry(nodeSelector=None, caBundle=None)})
    assert problems == []
    assert found["bge"] == Assignment("bge", REFERENCE, DIGEST, 0, {}, "", "")


def test_a_reference_by_tag_is_taken_with_the_digest_given():
    found, problems = parse_assignments({"bge": entry(reference="dc1.registry/models/bge:v1")})
    assert problems == []
    assert found["bge"].reference == "dc1.registry/models/bge:v1"
    assert found["bge"].digest == DIGEST


def test_good_entries_are_kept_beside_bad_ones_and_problems_come_in_key_order():
    found, problems = parse_assignments({"zz": "{", "good": entry(), "aa": "[]"})
    assert list(found) == ["good"]
    assert problems == [
        f"{WHERE} 'aa': not a JSON object",
        f"{WHERE} 'zz': not JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))",
    ]


# parse_assignments: every problem, by its message


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("Llama", entry(), "not a model name (a DNS label of at most 63 characters)"),
        ("a" * 64, entry(), "not a model name (a DNS label of at most 63 characters)"),
        ("-llama", entry(), "not a model name (a DNS label of at most 63 characters)"),
        ("llama_3", entry(), "not a model name (a DNS label of at most 63 characters)"),
        ("llama", "[]", "not a JSON object"),
        ("llama", "null", "not a JSON object"),
        ("llama", '"text"', "not a JSON object"),
        ("llama", json.dumps({"digest": DIGEST}), "needs a reference"),
        ("llama", entry(reference=""), "needs a reference"),
        ("llama", entry(reference=5), "needs a reference"),
        ("llama", json.dumps({"reference": "r/llama:v1"}), "needs a digest (algorithm:hex)"),
        ("llama", entry(digest="sha256"), "needs a digest (algorithm:hex)"),
        ("llama", entry(digest="SHA256:abc"), "needs a digest (algorithm:hex)"),
        ("llama", entry(digest="sha256:"), "needs a digest (algorithm:hex)"),
        ("llama", entry(digest=5), "needs a digest (algorithm:hex)"),
        (
            "llama",
            entry(digest=OLD_DIGEST),
            f"reference is pinned at {DIGEST}, digest says {OLD_DIGEST}",
        ),
        ("llama", entry(sizeBytes=-1), "sizeBytes is not a whole number of bytes"),
        ("llama", entry(sizeBytes=1.5), "sizeBytes is not a whole number of bytes"),
        ("llama", entry(sizeBytes="1"), "sizeBytes is not a whole number of bytes"),
        ("llama", entry(sizeBytes=True), "sizeBytes is not a whole number of bytes"),
        ("llama", entry(nodeSelector=["gpu"]), "nodeSelector is not a map of strings"),
        ("llama", entry(nodeSelector={"gpu": True}), "nodeSelector is not a map of strings"),
    ],
)
def test_a_bad_entry_is_reported_by_key_and_skipped(name, text, message):
    found, problems = parse_assignments({name: text})
    assert found == {}
    assert problems == [f"{WHERE} {name!r}: {message}"]


@pytest.mark.parametrize("text", ["{", "", "llama"])
def test_text_that_is_not_json_is_reported_with_the_parsers_reason(text):
    found, problems = parse_assignments({"llama": text})
    assert found == {}
    assert len(problems) == 1
    assert problems[0].startswith(f"{WHERE} 'llama': not JSON (")


def test_a_value_that_is_not_text_is_reported_not_raised():
    found, problems = parse_assignments({"llama": None})
    assert found == {}
    assert problems[0].startswith(f"{WHERE} 'llama': not JSON (")


# Assignment.to_text round-trips

_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
names = st.from_regex(rf"\A{_LABEL}\Z")
digests = st.from_regex(r"\A[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+\Z")
repositories = st.from_regex(r"\A[a-z0-9.:/-]{1,40}\Z")
texts = st.text(max_size=40)


@st.composite
def assignments(draw: st.DrawFn) -> Assignment:
    digest = draw(digests)
    repository = draw(repositories)
    reference = draw(st.sampled_from([f"{repository}@{digest}", f"{repository}:v1"]))
    return Assignment(
        name=draw(names),
        reference=reference,
        digest=digest,
        size_bytes=draw(st.integers(min_value=0, max_value=1 << 50)),
        node_selector=draw(st.dictionaries(texts, texts, max_size=3)),
        ca_pem=draw(texts),
        pull_secret=draw(texts),
    )


@given(assignments())
def test_an_assignments_text_reads_back_as_the_same_assignment(assignment):
    assert parse_assignments({assignment.name: assignment.to_text()}) == (
        {assignment.name: assignment},
        [],
    )


def test_the_text_is_canonical_and_leaves_out_empty_optional_fields():
    plain = Assignment("bge", REFERENCE, DIGEST, 7, {"b": "2", "a": "1"})
    assert plain.to_text() == (
        f'{{"digest":"{DIGEST}","nodeSelector":{{"a":"1","b":"2"}},'
        f'"reference":"{REFERENCE}","sizeBytes":7}}'
    )
    full = json.loads(Assignment("bge", REFERENCE, DIGEST, 7, {}, "ca", "pull").to_text())
    assert (full["caBundle"], full["pullSecret"]) == ("ca", "pull")


# cluster_entry


def node(
    name: str,
    labels: dict[str, str] | None = None,
    *,
    phase: str | None = None,
    digest: str = DIGEST,
    message: str = "",
    status: str | None = None,
    ready: bool = False,
) -> dict:
    labels = {**GPU, **(labels or {})}
    if ready:
        labels[ready_label("llama")] = READY
    annotations = {}
    if status is not None:
        annotations[STATUS_ANNOTATION] = status
    elif phase is not None:
        reported = {"phase": phase, "digest": digest}
        if message:
            reported["message"] = message
        annotations[STATUS_ANNOTATION] = json.dumps({"models": {"llama": reported}})
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations}}


def count(*nodes: dict, selector: dict[str, str] | None = None) -> dict:
    return cluster_entry(
        "gpu-a", "dc1", "llama", DIGEST, GPU if selector is None else selector, nodes
    )


def test_the_entry_names_the_cluster_and_counts_ready_nodes():
    assert count(node("n1", phase=NODE_READY, ready=True), node("n2")) == {
        "name": "gpu-a",
        "datacenter": "dc1",
        "nodesReady": 1,
        "nodesTotal": 2,
    }


def test_nodes_the_selector_does_not_match_are_not_counted():
    cpu = {"metadata": {"name": "cpu", "labels": {}}}
    other = node("n2", {"nvidia.com/gpu.present": "false"}, phase=NODE_READY, ready=True)
    bare: dict = {"metadata": {"name": "bare", "labels": None}}
    assert count(node("n1", phase=NODE_READY, ready=True), cpu, other, bare) == {
        "name": "gpu-a",
        "datacenter": "dc1",
        "nodesReady": 1,
        "nodesTotal": 1,
    }


def test_an_empty_selector_counts_every_node():
    cpu = {"metadata": {"name": "cpu"}}
    assert count(node("n1"), cpu, selector={})["nodesTotal"] == 2


@pytest.mark.parametrize(
    "given_node",
    [
        node("n1", phase=NODE_READY, ready=False),  # on disk, label not yet written
        node("n1", phase=NODE_READY, digest=OLD_DIGEST, ready=True),  # the old digest
        node("n1", phase=NODE_PULLING, ready=True),
        node("n1", ready=True),  # the agent reported nothing of the model
    ],
    ids=["no-label", "old-digest", "pulling", "unreported"],
)
def test_ready_needs_the_phase_the_digest_and_the_label(given_node):
    entry = count(given_node)
    assert (entry["nodesReady"], entry["nodesTotal"]) == (0, 1)
    assert "errors" not in entry


def test_failed_and_full_nodes_are_errors_sorted_by_node():
    entry = count(
        node("n3", phase=NODE_NO_SPACE, message="needs 16 GB, 2 GB free"),
        node("n1", phase=NODE_FAILED, message="registry said 500"),
        node("n2", phase=NODE_READY, ready=True),
        node("n0", phase=NODE_PULLING),
    )
    assert entry["nodesReady"] == 1
    assert entry["nodesTotal"] == 4
    assert entry["errors"] == [
        {"node": "n1", "reason": NODE_FAILED, "message": "registry said 500"},
        {"node": "n3", "reason": NODE_NO_SPACE, "message": "needs 16 GB, 2 GB free"},
    ]


def test_at_most_errors_kept_are_listed_the_first_by_node_and_messages_are_cut():
    failing = [node(f"n{i:02d}", phase=NODE_FAILED, message="x" * 500) for i in range(9, -1, -1)]
    entry = count(*failing)
    assert entry["nodesTotal"] == 10
    assert [e["node"] for e in entry["errors"]] == [f"n{i:02d}" for i in range(ERRORS_KEPT)]
    assert all(e["message"] == "x" * 300 for e in entry["errors"])


def test_errors_of_unselected_nodes_are_not_listed():
    failing = node("n1", {"nvidia.com/gpu.present": "false"}, phase=NODE_FAILED)
    assert "errors" not in count(failing)


@pytest.mark.parametrize(
    "text", ["", "not json", "[1, 2]", '"Ready"', "null", '{"models": null}', "{}"]
)
def test_an_unreadable_status_annotation_counts_as_nothing(text):
    entry = count(node("n1", status=text, ready=True))
    assert (entry["nodesReady"], entry["nodesTotal"]) == (0, 1)
    assert "errors" not in entry


@pytest.mark.parametrize(
    "text", ['{"models": ["llama"]}', '{"models": {"llama": "Ready"}}'], ids=["list", "string"]
)
def test_a_status_of_the_wrong_shape_counts_as_nothing(text):
    entry = count(node("n1", status=text, ready=True))
    assert (entry["nodesReady"], entry["nodesTotal"]) == (0, 1)


# cached_summary


def test_the_summary_adds_every_clusters_nodes():
    entries = [
        count(node("n1", phase=NODE_READY, ready=True), node("n2")),
        count(node("n1", phase=NODE_READY, ready=True), node("n2", phase=NODE_READY, ready=True)),
        {"name": "new"},
    ]
    assert cached_summary(entries) == "3/4"
    assert cached_summary(iter(entries)) == "3/4"
    assert cached_summary([]) == "0/0"


# field_manager, cacheable_name


def test_the_field_manager_names_the_model():
    assert field_manager("team-a", "llama-3-8b") == "fleet-model/team-a/llama-3-8b"


def test_the_field_manager_is_cut_to_what_the_api_server_takes():
    made = field_manager("n" * 63, "m" * 253)
    assert len(made) == 128
    assert made.startswith(f"fleet-model/{'n' * 63}/m")


@pytest.mark.parametrize("name", ["a", "0", "llama-3-8b", "a" * 63, "a-b"])
def test_dns_labels_are_cacheable(name):
    assert cacheable_name(name)


@pytest.mark.parametrize(
    "name", ["", "a" * 64, "-a", "a-", "Llama", "a_b", "a.b", "a b", "llama/3"]
)
def test_other_names_are_not_cacheable(name):
    assert not cacheable_name(name)


def test_a_name_with_a_trailing_newline_is_not_cacheable():
    assert not cacheable_name("llama\n")
