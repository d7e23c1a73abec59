"""What the watch hub makes of a stream's bytes: events split anywhere, filtered, dispatched."""

from __future__ import annotations

import orjson

from fleet.connections.client import ClusterClient, Resource
from fleet.connections.kubeconfig import Endpoint
from fleet.connections.watches import WatchHub, WatchSpec, _Stream, node_facts

CLUSTER = ("fleet-clusters", "gpu-01")
CONFIG_MAPS = Resource("v1", "ConfigMap", "configmaps", namespaced=True)
NODES = Resource("v1", "Node", "nodes", namespaced=False)


def hub_and_calls() -> tuple[WatchHub, list]:
    calls: list = []
    hub = WatchHub(lambda cluster, applyset: calls.append((cluster, applyset)), calls.append)
    return hub, calls


def stream(resource: Resource) -> _Stream:
    client = ClusterClient("gpu-01", Endpoint("https://127.0.0.1:1"))
    return _Stream(CLUSTER, WatchSpec(resource, "x in (a)"), client, "10", status=200)


def line(kind: str, body: dict) -> bytes:
    return orjson.dumps({"type": kind, "object": body}) + b"\n"


def labelled(name: str, version: str, applyset: str = "applyset-a-v1") -> dict:
    labels = {"applyset.kubernetes.io/part-of": applyset}
    return {"metadata": {"name": name, "resourceVersion": version, "labels": labels}}


def test_events_split_across_chunks_name_their_applyset_and_move_the_version():
    hub, calls = hub_and_calls()
    watched = stream(CONFIG_MAPS)
    data = line("MODIFIED", labelled("a", "11")) + line("DELETED", labelled("b", "12", "other"))
    for cut in (5, 40, len(data) - 3):
        hub._received(watched, data[:cut])
        hub._received(watched, data[cut:])
    assert calls == [(CLUSTER, "applyset-a-v1"), (CLUSTER, "other")] * 3
    assert watched.resource_version == "12"


def test_the_body_of_an_error_answer_is_not_taken_for_events():
    hub, calls = hub_and_calls()
    watched = stream(CONFIG_MAPS)
    hub._header(watched, b"HTTP/2 403 \r\n")
    hub._received(watched, line("MODIFIED", labelled("a", "11")))
    assert (calls, watched.status) == ([], 403)


def test_bookmarks_move_the_version_and_wake_nothing():
    hub, calls = hub_and_calls()
    watched = stream(CONFIG_MAPS)
    hub._received(watched, line("BOOKMARK", {"metadata": {"resourceVersion": "99"}}))
    assert (calls, watched.resource_version) == ([], "99")


def test_an_expired_history_marks_the_stream_for_a_fresh_start():
    hub, calls = hub_and_calls()
    watched = stream(CONFIG_MAPS)
    hub._received(watched, line("ERROR", {"kind": "Status", "code": 410}))
    assert watched.expired and calls == []


def test_node_events_count_only_when_labels_or_allocatable_change():
    hub, calls = hub_and_calls()
    watched = stream(NODES)
    node = {
        "metadata": {"name": "n1", "resourceVersion": "1", "labels": {"a": "b"}},
        "status": {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"t": 1}]},
    }
    hub._received(watched, line("ADDED", node))
    heartbeat = node | {"status": node["status"] | {"conditions": [{"t": 2}]}}
    hub._received(watched, line("MODIFIED", heartbeat))
    relabelled = heartbeat | {"metadata": heartbeat["metadata"] | {"labels": {"a": "c"}}}
    hub._received(watched, line("MODIFIED", relabelled))
    hub._received(watched, line("DELETED", relabelled))
    assert calls == [(CLUSTER, "")] * 3
    assert node_facts(node) == node_facts(heartbeat) != node_facts(relabelled)
