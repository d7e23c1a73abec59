"""What the watch hub makes of a stream's bytes: events split anywhere, filtered, dispatched;
and which events a deployment must look at."""

from __future__ import annotations

import orjson
import pycurl

from fleet import drift, health, plan
from fleet.connections.client import ClusterClient, ClusterNotConnected, Resource
from fleet.connections.kubeconfig import Endpoint
from fleet.connections.watches import WatchHub, WatchSpec, _Stream

CLUSTER = ("fleet-clusters", "gpu-01")
CONFIG_MAPS = Resource("v1", "ConfigMap", "configmaps", namespaced=True)


def hub_and_calls() -> tuple[WatchHub, list]:
    calls: list = []
    hub = WatchHub(
        lambda cluster, kind, body: calls.append((cluster, kind, body["metadata"]["name"])),
        calls.append,
    )
    return hub, calls


def stream(resource: Resource) -> _Stream:
    client = ClusterClient("gpu-01", Endpoint("https://127.0.0.1:1"))
    return _Stream(CLUSTER, WatchSpec(resource, "x in (a)"), client, "10", status=200)


def line(kind: str, body: dict) -> bytes:
    return orjson.dumps({"type": kind, "object": body}) + b"\n"


def labelled(name: str, version: str, applyset: str = "applyset-a-v1") -> dict:
    labels = {"applyset.kubernetes.io/part-of": applyset}
    return {"metadata": {"name": name, "resourceVersion": version, "labels": labels}}


def test_events_split_across_chunks_reach_the_filter_whole_and_move_the_version():
    hub, calls = hub_and_calls()
    watched = stream(CONFIG_MAPS)
    data = line("MODIFIED", labelled("a", "11")) + line("DELETED", labelled("b", "12", "other"))
    unlabelled = {"metadata": {"name": "c", "resourceVersion": "13"}}
    data += line("MODIFIED", unlabelled)
    for cut in (5, 40, len(data) - 3):
        hub._received(watched, data[:cut])
        hub._received(watched, data[cut:])
    assert calls == [(CLUSTER, "MODIFIED", "a"), (CLUSTER, "DELETED", "b")] * 3
    assert watched.resource_version == "13"


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


def test_an_expired_history_starts_the_stream_again_from_the_full_list():
    hub, calls = hub_and_calls()
    watched = stream(CONFIG_MAPS)
    hub._received(watched, line("ERROR", {"kind": "Status", "code": 410}))
    assert watched.expired and calls == []
    watched.handle = pycurl.Curl()
    hub._by_handle[id(watched.handle)] = watched
    hub._multi.add_handle(watched.handle)
    hub._ended(watched.handle, None)
    assert (watched.resource_version, watched.expired, watched.failures) == ("", False, 0)
    assert calls == []  # not a failure: nothing is reported lost


def applied(health_status: dict | None = None, managed: str = "f:data") -> dict:
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "d",
            "generation": 1,
            "managedFields": [
                {"manager": "fleet", "operation": "Apply", "fieldsV1": {managed: {}}},
                {"manager": "kube-controller-manager", "operation": "Update"},
            ],
        },
        "spec": {"replicas": 1},
    }
    if health_status is not None:
        body["status"] = health_status
    return body


READY_STATUS = {
    "observedGeneration": 1,
    "replicas": 1,
    "updatedReplicas": 1,
    "availableReplicas": 1,
    "readyReplicas": 1,
}


def test_only_deletions_changes_to_what_fleet_set_and_health_changes_matter():
    fingerprint = plan.fingerprint(applied())
    ready = drift.Recorded(fingerprint, health.health(applied(READY_STATUS)).state)
    assert ready.health == "Ready"
    # a status update that leaves it Ready; fleet's own apply seen again
    assert not drift.matters("MODIFIED", applied(READY_STATUS | {"replicas": 1}), ready)
    assert not drift.matters("ADDED", applied(READY_STATUS), ready)
    # someone took a field fleet set; it went; it is no longer Ready
    assert drift.matters("MODIFIED", applied(READY_STATUS, managed="f:other"), ready)
    assert drift.matters("DELETED", applied(READY_STATUS), ready)
    assert drift.matters("MODIFIED", applied({"observedGeneration": 1, "replicas": 1}), ready)
    # an object fleet has not recorded (being applied, or just pruned) wakes nothing
    unknown = drift.Recorded(None, None)
    assert not drift.matters("DELETED", applied(), unknown)
    assert not drift.matters("MODIFIED", applied(managed="f:other"), unknown)
    # health not judged yet: only its fields count
    assert not drift.matters("MODIFIED", applied(), drift.Recorded(fingerprint, None))


def test_a_fetch_for_a_cluster_not_watched_fails_at_once_as_unreachable():
    hub, _ = hub_and_calls()
    try:
        hub.fetch(CLUSTER, "https://127.0.0.1:1/api/v1/nodes", "application/json")
    except ClusterNotConnected as error:
        assert error.cluster == "gpu-01" and "not watched" in str(error)
    else:
        raise AssertionError("fetched from a cluster that is not watched")
