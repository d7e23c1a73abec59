"""Kubeconfigs to TLS settings: https only, verification on, keys in memory, no file left open."""

import base64
from pathlib import Path

import pytest
import yaml

from fleet.connections.cache import ClusterCache, Kubeconfig
from fleet.connections.client import ClusterNotConnected
from fleet.connections.kubeconfig import BadKubeconfig, parse_kubeconfig
from fleet.devenv.pki import new_ca

CA = new_ca("cluster-ca")
CLIENT = CA.issue("admin", organizations=("system:masters",), client=True)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(server="https://127.0.0.1:6443", user=None, **cluster) -> str:
    user = user or {
        "client-certificate-data": b64(CLIENT.cert_pem),
        "client-key-data": b64(CLIENT.key_pem),
    }
    return yaml.safe_dump(
        {
            "clusters": [
                {
                    "name": "c",
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": b64(CA.cert_pem),
                        **cluster,
                    },
                }
            ],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )


def open_files() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def test_a_client_certificate_is_loaded_from_memory_and_no_file_stays_open():
    before = open_files()
    endpoints = [parse_kubeconfig("gpu-01", kubeconfig()) for _ in range(50)]
    assert open_files() == before
    assert endpoints[0].server == "https://127.0.0.1:6443"
    assert "key" not in repr(endpoints[0]).lower()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            kubeconfig("http://127.0.0.1:8080"),
            "is not https: fleet sends credentials only over TLS",
        ),
        (kubeconfig(**{"insecure-skip-tls-verify": True}), "disables TLS verification"),
        (kubeconfig(user={"username": "x"}), "neither a client certificate nor a token"),
        (
            kubeconfig(user={"client-certificate-data": "!!", "client-key-data": "!!"}),
            "not valid base64",
        ),
        ("[1, 2]", "is not a mapping"),
        ("contexts: []", "has no context"),
    ],
)
def test_refused_kubeconfigs_say_why(text, problem):
    with pytest.raises(BadKubeconfig, match=problem):
        parse_kubeconfig("gpu-01", text)


def test_the_cache_builds_one_client_per_cluster_and_rebuilds_on_a_new_secret_version():
    cache = ClusterCache()
    encoded = b64(kubeconfig().encode())
    first = cache.client("ns", "gpu-01", Kubeconfig("uid/1", encoded))
    assert cache.client("ns", "gpu-01", Kubeconfig("uid/1", encoded)) is first
    second = cache.client("ns", "gpu-01", Kubeconfig("uid/2", encoded))
    assert second is not first and len(cache) == 1
    cache.forget("ns", "gpu-01")
    assert len(cache) == 0
    with pytest.raises(ClusterNotConnected, match="Secret ns/gpu-02-kubeconfig not found"):
        cache.client("ns", "gpu-02", None)
