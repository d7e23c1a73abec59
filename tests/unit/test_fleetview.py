import datetime

import pytest

from fleet.fleetview import Heartbeat, heartbeat, rows, unread_heartbeat

NOW = datetime.datetime(2026, 11, 23, 12, 0, 0, tzinfo=datetime.UTC)
WHERE = "fleet-system/fleet-controller"
HELD = f"(Lease {WHERE}, holder pod-1)"


def cluster(name, paused=False):
    return {
        "metadata": {"name": name, "namespace": "ns", "labels": {}},
        "spec": {"paused": paused},
        "status": {"phase": "Provisioned", "initialization": {"controlPlaneInitialized": True}},
    }


def deployment(cluster_name, profile, status):
    body = {"metadata": {"namespace": "ns"}, "spec": {"cluster": cluster_name, "profile": profile}}
    return body if status is None else body | {"status": status}


def test_a_deployment_without_a_phase_is_unknown_and_a_problem():
    (row,) = rows(
        [cluster("gpu-01")],
        [
            deployment("gpu-01", "a", None),
            deployment("gpu-01", "b", {}),
            deployment("gpu-01", "c", {"addons": [{"name": "x", "phase": "Ready"}]}),
        ],
    )
    assert row.problems == tuple(
        f"{profile}: Unknown: the controller has not reported on it" for profile in "abc"
    )
    assert (row.addons_ready, row.addons_total) == (1, 1)


def test_a_paused_deployment_adds_no_problem_to_its_paused_cluster():
    paused = {"phase": "Paused", "addons": [{"name": "x", "phase": "Ready"}]}
    (row,) = rows([cluster("gpu-01", paused=True)], [deployment("gpu-01", "a", paused)])
    assert row.problems == ("paused: no add-ons are applied",)
    assert (row.addons_ready, row.addons_total) == (1, 1)


def lease(renew_time="2026-11-23T11:59:50.250000Z", holder="pod-1", duration=15):
    return {
        "spec": {
            "holderIdentity": holder,
            "renewTime": renew_time,
            "leaseDurationSeconds": duration,
        }
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            lease(),
            Heartbeat(WHERE, "pod-1", "2026-11-23T11:59:50.250000Z", 9, healthy=True),
        ),
        (
            lease("2026-11-23T11:59:30.000000Z"),
            Heartbeat(WHERE, "pod-1", "2026-11-23T11:59:30.000000Z", 30, healthy=True),
        ),
        (
            lease("2026-11-23T11:59:29.000000Z"),
            Heartbeat(
                WHERE,
                "pod-1",
                "2026-11-23T11:59:29.000000Z",
                31,
                healthy=False,
                note=f"the fleet controller has not reported for 31 s {HELD}",
            ),
        ),
        (
            lease("2026-11-23T11:58:00.000000Z", duration=60),
            Heartbeat(WHERE, "pod-1", "2026-11-23T11:58:00.000000Z", 120, healthy=True),
        ),
        (
            # A Lease that does not say its duration gets client-go's 15 s.
            lease("2026-11-23T11:59:20.000000Z", duration=None),
            Heartbeat(
                WHERE,
                "pod-1",
                "2026-11-23T11:59:20.000000Z",
                40,
                healthy=False,
                note=f"the fleet controller has not reported for 40 s {HELD}",
            ),
        ),
        (
            # Renewed by a clock slightly ahead of ours: no negative ages.
            lease("2026-11-23T12:00:01.000000Z"),
            Heartbeat(WHERE, "pod-1", "2026-11-23T12:00:01.000000Z", 0, healthy=True),
        ),
        (
            None,
            Heartbeat(
                WHERE, healthy=False, note=f"no fleet controller has reported: no Lease {WHERE}"
            ),
        ),
        (
            lease(holder=""),
            Heartbeat(
                WHERE,
                None,
                "2026-11-23T11:59:50.250000Z",
                healthy=False,
                note=f"no fleet controller holds Lease {WHERE}",
            ),
        ),
        (
            {"spec": {}},
            Heartbeat(WHERE, healthy=False, note=f"no fleet controller holds Lease {WHERE}"),
        ),
    ],
)
def test_the_controller_heartbeat_from_its_lease(body, expected):
    assert heartbeat(body, NOW, WHERE) == expected


def test_an_unreadable_lease_says_nothing_about_the_controller():
    beat = unread_heartbeat(WHERE, "403 Forbidden")
    assert beat.healthy is None
    assert beat.to_json() == {
        "lease": WHERE,
        "holder": None,
        "renewTime": None,
        "ageSeconds": None,
        "healthy": None,
        "note": f"cannot read Lease {WHERE}, the controller's health is unknown: 403 Forbidden",
    }
