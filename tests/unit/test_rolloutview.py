"""What `fleet rollout status` and `fleet rollout history` print, from a profile, its
AddonDeployments and its kept revisions."""

from hypothesis import given
from hypothesis import strategies as st

from fleet.revisions import content, parse_snapshot, revision_hash, snapshot_body
from fleet.rolloutview import (
    BAR_WIDTH,
    ClusterView,
    bar,
    clusters,
    history_json,
    history_rows,
    status_lines,
)

FULL, EMPTY = "█", "░"
TITLE = "AddonProfile fleet-system/gpus"
HEADER = ("WAVE", "PROGRESS", "READY", "STARTED", "COMPLETED", "CLUSTERS")
T, P = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


def deployment(cluster, revision, phase="Ready", generation=2, observed=2):
    return {
        "metadata": {"name": f"gpus.{cluster}", "generation": generation},
        "spec": {"cluster": cluster, "profileRevision": revision},
        "status": {"phase": phase, "observedGeneration": observed},
    }


def view(name, revision, ready=True, phase=None):
    return ClusterView(name, revision, ready, phase or ("Ready" if ready else "Applying"))


def profile(rollout=None, record=None, status=None):
    body = {
        "metadata": {"name": "gpus", "namespace": "fleet-system", "uid": "u-1"},
        "spec": {"addons": [{"name": "cert-manager"}]},
        "status": dict(status or {}),
    }
    if rollout is not None:
        body["spec"]["rollout"] = rollout
    if record is not None:
        body["status"]["rollout"] = record
    return body


def halted_record(**extra):
    return {
        "phase": "Halted",
        "wave": "wave-1",
        "target": T,
        "previous": P,
        "total": 5,
        "updated": 3,
        "ready": 2,
        "failed": 1,
        "failingCluster": "c3",
        "reason": "Degraded: gpu-operator pods crash-looping",
        "pausedByUser": False,
        "startedAt": "2024-05-01T10:00:00Z",
        "completedAt": None,
        "waves": [
            {
                "name": "canary",
                "revision": T,
                "started": "2024-05-01T10:00:05Z",
                "completed": "2024-05-01T10:03:00Z",
                "clusters": ["c1"],
            },
            {
                "name": "wave-1",
                "revision": T,
                "started": "2024-05-01T10:03:01Z",
                "completed": None,
                "clusters": ["c2", "c3"],
            },
        ],
        **extra,
    }


HALTED_VIEWS = {
    "c1": view("c1", T),
    "c2": view("c2", T),
    "c3": view("c3", T, ready=False, phase="Failed"),
    "c4": view("c4", P),
}


def test_a_deployment_counts_ready_only_at_its_current_generation():
    views = clusters(
        [
            deployment("current", T, generation=3, observed=3),
            deployment("stale", T, generation=4, observed=3),
        ]
    )

    assert views["current"] == ClusterView("current", T, True, "Ready")
    assert views["stale"] == ClusterView("stale", T, False, "Ready")


def test_a_deployment_not_in_phase_ready_is_not_ready():
    views = clusters([deployment("c1", T, phase="Applying")])

    assert views["c1"] == ClusterView("c1", T, False, "Applying")


def test_a_deployment_without_status_is_pending():
    body = deployment("c1", T)
    del body["status"]

    assert clusters([body])["c1"] == ClusterView("c1", T, False, "Pending")


def test_a_deployment_without_a_profile_revision_is_on_none():
    body = deployment("c1", T)
    del body["spec"]["profileRevision"]

    assert clusters([body])["c1"].revision == ""


def test_cluster_views_are_keyed_by_cluster_in_name_order():
    views = clusters([deployment("zeta", T), deployment("alpha", P), deployment("mid", T)])

    assert list(views) == ["alpha", "mid", "zeta"]
    assert views["alpha"].revision == P


def test_a_cluster_view_as_json():
    assert view("c1", T).to_json() == {"revision": T, "phase": "Ready", "ready": True}


def test_a_bar_of_nothing_to_do_is_full():
    assert bar(0, 0) == FULL * BAR_WIDTH


def test_a_bar_half_done_is_half_full():
    assert bar(1, 2) == FULL * 10 + EMPTY * 10


def test_a_bar_not_started_is_empty_and_a_finished_one_full():
    assert bar(0, 7) == EMPTY * BAR_WIDTH
    assert bar(7, 7) == FULL * BAR_WIDTH


def test_a_bar_rounds_to_the_nearest_cell_of_its_width():
    assert bar(1, 3, width=10) == FULL * 3 + EMPTY * 7
    assert bar(2, 3, width=10) == FULL * 7 + EMPTY * 3


@given(
    total=st.integers(min_value=0, max_value=500),
    data=st.data(),
    width=st.integers(min_value=1, max_value=60),
)
def test_a_bar_is_always_its_width_filled_from_the_left(total, data, width):
    done = data.draw(st.integers(min_value=0, max_value=total))

    drawn = bar(done, total, width)

    assert len(drawn) == width
    filled = drawn.count(FULL)
    assert drawn == FULL * filled + EMPTY * (width - filled)
    if total and done < total:
        assert bar(done + 1, total, width).count(FULL) >= filled


def test_a_profile_without_a_rollout_reports_clusters_on_its_revision_and_no_rows():
    views = {"c1": view("c1", T), "c2": view("c2", T, ready=False), "c3": view("c3", P)}

    lines, rows = status_lines(profile(status={"revision": T}), views)

    assert lines == [
        f"{TITLE}: no spec.rollout, so every cluster gets a new revision at once",
        f"revision {T}: 1/3 clusters Ready on it",
    ]
    assert rows == []


def test_a_rollout_not_planned_yet_says_so_with_no_rows():
    lines, rows = status_lines(profile(rollout={"canaries": 1}), HALTED_VIEWS)

    assert lines == [f"{TITLE}: the controller has not planned a rollout yet"]
    assert rows == []


def test_a_halted_rollout_names_the_failing_cluster_and_the_reason():
    lines, _ = status_lines(profile(rollout={"canaries": 1}, record=halted_record()), HALTED_VIEWS)

    assert lines == [
        f"{TITLE}: revision {T} (from {P})",
        "phase    Halted",
        "wave     wave-1",
        "clusters 3/5 updated, 2 Ready, 1 failed",
        "failing  c3: Degraded: gpu-operator pods crash-looping",
        "started  2024-05-01T10:00:00Z",
    ]


def test_a_halted_rollout_has_a_row_per_wave_and_one_for_the_clusters_waiting():
    _, rows = status_lines(profile(rollout={"canaries": 1}, record=halted_record()), HALTED_VIEWS)

    assert rows == [
        HEADER,
        ("canary", FULL * BAR_WIDTH, "1/1", "10:00:05", "10:03:00", "c1"),
        ("wave-1", FULL * 10 + EMPTY * 10, "1/2", "10:03:01", "-", "c2, c3"),
        ("waiting", EMPTY * BAR_WIDTH, "0/2", "-", "-", "c4 and 1 without add-ons yet"),
    ]


def test_a_wave_counts_only_clusters_ready_on_its_own_revision():
    record = halted_record(
        waves=[{"name": "canary", "revision": T, "started": None, "clusters": ["c1", "c4", "gone"]}]
    )

    _, rows = status_lines(profile(rollout={"canaries": 1}, record=record), HALTED_VIEWS)

    assert rows[1] == ("canary", bar(1, 3), "1/3", "-", "-", "c1, c4, gone")


def test_a_wave_lists_six_clusters_and_counts_the_rest():
    names = [f"c{i}" for i in range(1, 10)]
    record = halted_record(
        total=9, waves=[{"name": "wave-1", "revision": T, "started": None, "clusters": names}]
    )
    views = {n: view(n, T) for n in names}

    _, rows = status_lines(profile(rollout={"canaries": 1}, record=record), views)

    assert rows == [
        HEADER,
        ("wave-1", FULL * BAR_WIDTH, "9/9", "-", "-", "c1, c2, c3, c4, c5, c6 +3"),
    ]


def test_a_rollout_paused_by_the_user_says_how_to_go_on():
    record = halted_record(phase="Paused", pausedByUser=True, failingCluster=None)

    lines, _ = status_lines(profile(rollout={"canaries": 1}, record=record), HALTED_VIEWS)

    assert lines[1] == "phase    Paused (fleet rollout resume to go on)"
    assert not any(line.startswith("failing") for line in lines)


def test_a_rollout_paused_after_the_canaries_says_how_to_go_on():
    record = halted_record(phase="Paused", failingCluster=None)

    lines, _ = status_lines(profile(rollout={"canaries": 1}, record=record), HALTED_VIEWS)

    assert lines[1] == "phase    Paused after the canaries (fleet rollout resume to go on)"


def test_a_completed_rollout_with_every_cluster_on_target_has_no_waiting_row():
    record = halted_record(
        phase="Complete",
        wave=None,
        total=3,
        updated=3,
        ready=3,
        failed=0,
        failingCluster=None,
        previous=None,
        completedAt="2024-05-01T10:20:00Z",
        waves=[{"name": "all", "revision": T, "started": None, "clusters": ["c1", "c2"]}],
    )
    views = {"c1": view("c1", T), "c2": view("c2", T), "c3": view("c3", T)}

    lines, rows = status_lines(profile(rollout={"canaries": 1}, record=record), views)

    assert lines == [
        f"{TITLE}: revision {T}",
        "phase    Complete",
        "clusters 3/3 updated, 3 Ready, 0 failed",
        "started  2024-05-01T10:00:00Z, completed 2024-05-01T10:20:00Z",
    ]
    assert rows == [HEADER, ("all", FULL * BAR_WIDTH, "2/2", "-", "-", "c1, c2")]


def test_a_rollout_with_no_waves_and_nothing_waiting_has_no_rows():
    record = halted_record(total=1, waves=[])

    _, rows = status_lines(profile(rollout={"canaries": 1}, record=record), {"c1": view("c1", T)})

    assert rows == []


ADDONS_1 = [{"name": "cert-manager", "values": {"replicas": 1}}]
ADDONS_2 = [{"name": "cert-manager", "values": {"replicas": 2}}]
ADDONS_3 = [*ADDONS_2, {"name": "dcgm"}]
SPECS = {"cert-manager": {"chart": {"name": "cert-manager", "version": "1.14.0"}}}


def snapshot(number, addons, created):
    held = content({"addons": addons}, SPECS)
    body = snapshot_body(profile(), revision_hash(held), held, number)
    body["metadata"]["creationTimestamp"] = created
    return parse_snapshot(body)


S1 = snapshot(1, ADDONS_1, "2024-05-01T09:00:00Z")
S2 = snapshot(2, ADDONS_2, "2024-05-01T10:00:00Z")
S3 = snapshot(3, ADDONS_3, "2024-05-01T11:00:00Z")
HISTORY_VIEWS = {
    "c1": view("c1", S3.hash),
    "c2": view("c2", S3.hash, ready=False),
    "c3": view("c3", S2.hash),
}


def test_history_has_a_header_and_a_row_per_revision_oldest_first():
    rows = history_rows([S3, S1, S2], HISTORY_VIEWS, {"target": S3.hash, "previous": S2.hash})

    assert rows == [
        ("REVISION", "HASH", "CREATED", "CLUSTERS", "", "CHANGE"),
        ("1", S1.hash, "2024-05-01T09:00:00Z", "0", "", "first revision"),
        ("2", S2.hash, "2024-05-01T10:00:00Z", "1", "previous", "cert-manager (values)"),
        ("3", S3.hash, "2024-05-01T11:00:00Z", "2", "target", "+dcgm"),
    ]


def test_history_without_a_rollout_record_marks_no_revision():
    rows = history_rows([S1, S2], HISTORY_VIEWS, None)

    assert [row[4] for row in rows[1:]] == ["", ""]
    assert [row[3] for row in rows[1:]] == ["0", "1"]


def test_history_of_no_revisions_is_only_the_header():
    assert history_rows([], HISTORY_VIEWS, None) == [
        ("REVISION", "HASH", "CREATED", "CLUSTERS", "", "CHANGE")
    ]


def test_history_as_json_names_each_revision_and_its_clusters_oldest_first():
    assert history_json([S2, S3, S1], HISTORY_VIEWS, None) == [
        {
            "revision": 1,
            "hash": S1.hash,
            "name": f"gpus-{S1.hash}",
            "created": "2024-05-01T09:00:00Z",
            "clusters": [],
            "mark": "",
            "change": "first revision",
        },
        {
            "revision": 2,
            "hash": S2.hash,
            "name": f"gpus-{S2.hash}",
            "created": "2024-05-01T10:00:00Z",
            "clusters": ["c3"],
            "mark": "",
            "change": "cert-manager (values)",
        },
        {
            "revision": 3,
            "hash": S3.hash,
            "name": f"gpus-{S3.hash}",
            "created": "2024-05-01T11:00:00Z",
            "clusters": ["c1", "c2"],
            "mark": "",
            "change": "+dcgm",
        },
    ]


def test_an_empty_rollout_spec_is_a_rollout_with_every_default():
    lines, _ = status_lines(profile(rollout={}), HALTED_VIEWS)
    assert lines == [f"{TITLE}: the controller has not planned a rollout yet"]
