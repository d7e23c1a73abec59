"""Which datacenters need a model, and what its status says (fleet.replication), and the
local fleet's registry configuration for pull-through caches."""

import pytest

from fleet.api.models import Datacenter, InvalidSpec
from fleet.devenv.registry import RegistryFiles, registry_config, registry_env
from fleet.replication import (
    COPYING,
    FAILED,
    PENDING,
    REPLICATED,
    WARMING,
    CopyState,
    entry,
    parse_model,
    summary,
    targets,
)

from .test_profiles import cluster

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
NOW = "2026-11-26T10:00:00Z"


def body(**spec):
    base = {"source": {"reference": "hub.example.com/models/llama:v1"}}
    return {"metadata": {"name": "llama", "namespace": "ns"}, "spec": base | spec}


def datacenter(name, url="", **registry):
    return Datacenter(name, "", {"url": url, **registry} if url else dict(registry), {})


def test_a_model_spec_is_checked_and_defaults_its_repository_to_the_sources():
    spec = parse_model(body())
    assert (spec.source.registry, spec.repository, spec.resolve_seconds) == (
        "hub.example.com",
        "models/llama",
        300,
    )
    with pytest.raises(InvalidSpec, match=r"spec\.source\.reference"):
        parse_model(body(source={"reference": "llama:v1"}))


def test_a_model_is_cached_on_gpu_nodes_unless_told_otherwise():
    spec = parse_model(body())
    assert (spec.cache, spec.node_selector) == (True, {"nvidia.com/gpu.present": "true"})
    spec = parse_model(body(cache={"enabled": False}))
    assert not spec.cache
    spec = parse_model(body(cache={"nodeSelector": {"pool": "a100"}}))
    assert spec.node_selector == {"pool": "a100"}
    with pytest.raises(InvalidSpec, match=r"spec\.cache\.nodeSelector must map"):
        parse_model(body(cache={"nodeSelector": ["pool"]}))


def test_a_cached_models_name_must_be_able_to_name_a_node_label():
    long = {"metadata": {"name": "m" * 64, "namespace": "ns"}, "spec": body()["spec"]}
    with pytest.raises(InvalidSpec, match="DNS label of at most 63"):
        parse_model(long)
    long["spec"]["cache"] = {"enabled": False}
    assert parse_model(long).name == "m" * 64


def test_each_datacenter_of_a_selected_cluster_is_a_target_once_and_problems_are_named():
    clusters = [
        cluster("a", {"gpu": "yes", "fleet.mlops.dev/datacenter": "dc-1"}),
        cluster("b", {"gpu": "yes", "fleet.mlops.dev/datacenter": "dc-1"}),
        cluster("c", {"gpu": "yes", "fleet.mlops.dev/datacenter": "dc-2"}),
        cluster("d", {"gpu": "yes"}),
        cluster("e", {"gpu": "yes", "fleet.mlops.dev/datacenter": "dc-9"}),
        cluster("f", {"fleet.mlops.dev/datacenter": "dc-3"}),
    ]
    found = {
        "dc-1": datacenter("dc-1", "r1:5000"),
        "dc-2": datacenter("dc-2", "r2:5000", pullThrough=True),
        "dc-3": datacenter("dc-3", "r3:5000"),
    }
    selection = targets(
        parse_model(body(clusterSelector={"matchLabels": {"gpu": "yes"}})), clusters, found
    )
    assert [(t.datacenter, t.clusters, t.pull_through) for t in selection.targets] == [
        ("dc-1", ("a", "b"), False),
        ("dc-2", ("c",), True),
    ]
    assert selection.problems == (
        "cluster d has no datacenter label",
        "cluster e: Datacenter dc-9 not found",
    )
    assert str(selection.targets[0].reference(DIGEST, "v1")) == f"r1:5000/models/llama:v1@{DIGEST}"


def test_an_entry_follows_its_copy_and_a_replicated_one_stays_without_a_copy():
    target = targets(
        parse_model(body()),
        [cluster("a", {"fleet.mlops.dev/datacenter": "dc-1"})],
        {"dc-1": datacenter("dc-1", "r1:5000")},
    ).targets[0]
    report = {"expectedBytes": 200 << 20, "sentBytes": 50 << 20, "skippedBytes": 50 << 20}
    copying = entry(target, DIGEST, CopyState(DIGEST, running=True, report=report), None, NOW)
    assert (copying["phase"], copying["message"]) == (COPYING, "50% (100 of 200 MiB)")
    done = entry(target, DIGEST, CopyState(DIGEST, running=False, done=True), copying, NOW)
    assert done["phase"] == REPLICATED
    assert entry(target, DIGEST, None, done, NOW) == done
    assert entry(target, OTHER, None, done, NOW)["phase"] == PENDING
    failed = entry(target, DIGEST, CopyState(DIGEST, running=False, error="refused"), None, NOW)
    assert (failed["phase"], failed["lastError"]) == (FAILED, "refused")
    stale = entry(target, DIGEST, CopyState(OTHER, running=True), None, NOW)
    assert stale["phase"] == PENDING


def test_a_pull_through_target_warms():
    target = targets(
        parse_model(body()),
        [cluster("a", {"fleet.mlops.dev/datacenter": "dc-1"})],
        {"dc-1": datacenter("dc-1", "r1:5000", pullThrough=True)},
    ).targets[0]
    assert entry(target, DIGEST, CopyState(DIGEST, running=True), None, NOW)["phase"] == WARMING


def test_the_summary_names_the_first_failure_and_counts_replicas():
    ok = {"name": "dc-1", "phase": REPLICATED}
    bad = {"name": "dc-2", "phase": FAILED, "lastError": "refused"}
    assert summary([ok, bad], ()) == (
        "1/2",
        {
            "type": "Ready",
            "status": "False",
            "reason": "ReplicationFailed",
            "message": "dc-2: refused",
        },
    )
    assert summary([ok], ())[1]["status"] == "True"
    assert summary([], ())[1]["reason"] == "NoDatacenter"
    assert summary([ok], ("cluster d has no datacenter label",))[1]["reason"] == "SelectionProblem"


def test_a_pull_through_registry_proxies_its_upstream_and_keeps_its_uploads_across_restarts(
    tmp_path,
):
    cache = RegistryFiles("dc-1", tmp_path, 5001, upstream="https://127.0.0.1:5000")
    config = registry_config(cache)
    assert config["proxy"] == {"remoteurl": "https://127.0.0.1:5000"}
    assert config["http"]["secret"] == registry_config(cache)["http"]["secret"]
    assert registry_env(cache, tmp_path / "ca.crt")["SSL_CERT_FILE"] == str(tmp_path / "ca.crt")
    plain = RegistryFiles("dc-2", tmp_path, 5002)
    assert "proxy" not in registry_config(plain)
    assert "SSL_CERT_FILE" not in registry_env(plain, tmp_path / "ca.crt")
