"""Exact output, exit codes and requests of `fleet rollout` against a fake API server over TLS.

The fake ignores `labelSelector` (it matches on the path alone), so each collection is
registered at its path and the selector the command sent is checked in `api.requests`.
The fake answers GETs only; the fixture adds a PATCH handler that records the request
(as "PATCH <path>") and its body, so that a write, or its absence, is seen.
"""

import json

import pytest
from click.testing import CliRunner

from fleet.cli.main import cli
from fleet.revisions import content, revision_hash, snapshot_body

from .fakeapi import FakeApi, new_api, serve

PROFILE = "/apis/fleet.mlops.dev/v1alpha1/namespaces/ns/addonprofiles/app"
DEPLOYMENTS = "/apis/fleet.mlops.dev/v1alpha1/namespaces/ns/addondeployments"
REVISIONS = "/apis/apps/v1/namespaces/ns/controllerrevisions"
ADDONS = "/apis/fleet.mlops.dev/v1alpha1/namespaces/ns/addons"
ADDON_READS = [f"{ADDONS}/gpu-operator", f"{ADDONS}/dcgm-exporter"]
SELECTOR = "?labelSelector=fleet.mlops.dev%2Fprofile%3Dapp"  # fleet.mlops.dev/profile=app
FULL, EMPTY = "█" * 20, "░" * 20

OPERATOR = {"chart": "gpu-operator", "version": "v25.3.0"}
EXPORTER = {"chart": "dcgm-exporter", "version": "4.1.1"}
HELD = [
    content(
        {"addons": [{"name": "gpu-operator", "values": {"mig": "single"}}]},
        {"gpu-operator": OPERATOR},
    ),
    content(
        {
            "addons": [
                {"name": "gpu-operator", "values": {"mig": "single"}},
                {"name": "dcgm-exporter", "dependsOn": ["gpu-operator"]},
            ]
        },
        {"gpu-operator": OPERATOR, "dcgm-exporter": EXPORTER},
    ),
    content(
        {
            "addons": [
                {"name": "gpu-operator", "values": {"mig": "mixed"}},
                {"name": "dcgm-exporter", "dependsOn": ["gpu-operator"]},
            ]
        },
        {"gpu-operator": OPERATOR | {"version": "v25.3.1"}, "dcgm-exporter": EXPORTER},
    ),
]
H1, H2, H3 = (revision_hash(held) for held in HELD)
WAVES = {"canary": 1, "maxUnavailable": 1, "failurePolicy": "Halt"}


def profile(rollout=None, *, spec_rollout=True, revision=H3):
    spec = {"addons": HELD[-1]["addons"]} | ({"rollout": WAVES} if spec_rollout else {})
    status = {"revision": revision} | ({"rollout": rollout} if rollout is not None else {})
    return {
        "apiVersion": "fleet.mlops.dev/v1alpha1",
        "kind": "AddonProfile",
        "metadata": {"name": "app", "namespace": "ns", "uid": "0b1c-uid", "generation": 7},
        "spec": spec,
        "status": status,
    }


def record(**fields):
    base = {
        "phase": "Progressing",
        "wave": "",
        "target": H3,
        "previous": H2,
        "total": 0,
        "updated": 0,
        "ready": 0,
        "failed": 0,
        "failingCluster": "",
        "reason": "",
        "pausedByUser": False,
        "startedAt": "2026-11-23T11:50:00Z",
        "completedAt": None,
        "state": {"requested": H3},
        "waves": [],
    }
    return base | fields


def wave(name, clusters, started, completed=None, revision=H3):
    return {
        "name": name,
        "revision": revision,
        "started": started,
        "completed": completed,
        "clusters": clusters,
    }


def deployment(cluster, revision, phase="Ready", generation=2, observed=2):
    status = {"observedGeneration": observed} | ({"phase": phase} if phase else {})
    return {
        "metadata": {"name": f"app.{cluster}", "namespace": "ns", "generation": generation},
        "spec": {"cluster": cluster, "profile": "app", "profileRevision": revision},
        "status": status,
    }


def revision(number, created):
    body = snapshot_body(profile(), (H1, H2, H3)[number - 1], HELD[number - 1], number)
    body["metadata"]["creationTimestamp"] = created
    return body


@pytest.fixture
def patches():
    return []


@pytest.fixture
def api(tmp_path, patches):
    fake = new_api()
    for name, spec in HELD[-1]["addonSpecs"].items():
        fake.objects[f"{ADDONS}/{name}"] = {"metadata": {"name": name}, "spec": spec}
    server = serve(fake, tmp_path)

    def do_PATCH(handler):  # BaseHTTPRequestHandler calls do_<METHOD>
        length = int(handler.headers.get("Content-Length") or 0)
        fake.requests.append(f"PATCH {handler.path}")
        patches.append(json.loads(handler.rfile.read(length) or b"null"))
        data = json.dumps(fake.objects.get(handler.path.split("?")[0], {})).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    server.RequestHandlerClass.do_PATCH = do_PATCH
    yield fake
    server.shutdown()
    server.server_close()


def rollout(api: FakeApi, tmp_path, *args):
    path = api.kubeconfig(tmp_path)
    return CliRunner().invoke(
        cli, ["rollout", *args, "--kubeconfig", str(path)], catch_exceptions=False
    )


def test_a_change_the_controller_has_not_planned_yet_is_said_and_not_settled(api, tmp_path):
    api.objects[PROFILE] = profile(record(phase="Complete", target=H2, state={"requested": H2}))
    api.collections[DEPLOYMENTS] = [deployment("gpu-01", H2)]
    result = rollout(api, tmp_path, "status", "app", "-n", "ns")
    assert result.stdout.splitlines()[:3] == [
        f"AddonProfile ns/app: revision {H2} (from {H2})",
        f"the controller has not planned revision {H3} yet",
        "phase    Complete",
    ]
    assert result.exit_code == 0
    shown = json.loads(rollout(api, tmp_path, "status", "app", "-n", "ns", "-o", "json").stdout)
    assert shown["notPlannedYet"] == H3


def test_status_of_a_halted_rollout_shows_each_wave_and_exits_3(api, tmp_path):
    api.objects[PROFILE] = profile(
        record(
            phase="Halted",
            wave="wave-1",
            total=5,
            updated=3,
            ready=1,
            failed=1,
            failingCluster="gpu-02",
            reason="Failed: helm upgrade timed out",
            state={"requested": H3, "haltedBy": "gpu-02"},
            waves=[
                wave("canary", ["gpu-01"], "2026-11-23T11:50:00Z", "2026-11-23T11:53:10Z"),
                wave("wave-1", ["gpu-02", "gpu-03", "gpu-04"], "2026-11-23T11:53:10Z"),
            ],
        )
    )
    api.collections[DEPLOYMENTS] = [
        deployment("gpu-04", H2),  # not moved yet
        deployment("gpu-02", H3, phase="Failed"),
        deployment("gpu-03", H3, generation=3, observed=2),  # Ready, but not on its newest spec
        deployment("gpu-01", H3),
    ]  # and gpu-05, which has no AddonDeployment yet
    result = rollout(api, tmp_path, "status", "app", "-n", "ns")
    assert result.stdout == (
        f"AddonProfile ns/app: revision {H3} (from {H2})\n"
        "phase    Halted\n"
        "wave     wave-1\n"
        "clusters 3/5 updated, 1 Ready, 1 failed\n"
        "failing  gpu-02: Failed: helm upgrade timed out\n"
        "started  2026-11-23T11:50:00Z\n"
        "\n"
        "WAVE     PROGRESS              READY  STARTED   COMPLETED  CLUSTERS\n"
        f"canary   {FULL}  1/1    11:50:00  11:53:10   gpu-01\n"
        f"wave-1   {EMPTY}  0/3    11:53:10  -          gpu-02, gpu-03, gpu-04\n"
        f"waiting  {EMPTY}  0/1    -         -          1 without add-ons yet\n"
    )
    assert result.stderr == ""
    assert result.exit_code == 3
    assert api.requests == [PROFILE, DEPLOYMENTS + SELECTOR, *ADDON_READS]


def complete():
    return record(
        phase="Complete",
        total=2,
        updated=2,
        ready=2,
        completedAt="2026-11-23T11:58:30Z",
        waves=[
            wave("canary", ["gpu-01"], "2026-11-23T11:50:00Z", "2026-11-23T11:52:00Z"),
            wave("wave-1", ["gpu-02"], "2026-11-23T11:52:00Z", "2026-11-23T11:58:30Z"),
        ],
    )


def test_status_of_a_complete_rollout_exits_0(api, tmp_path):
    api.objects[PROFILE] = profile(complete())
    api.collections[DEPLOYMENTS] = [deployment("gpu-01", H3), deployment("gpu-02", H3)]
    result = rollout(api, tmp_path, "status", "app", "-n", "ns")
    assert result.stdout == (
        f"AddonProfile ns/app: revision {H3} (from {H2})\n"
        "phase    Complete\n"
        "clusters 2/2 updated, 2 Ready, 0 failed\n"
        "started  2026-11-23T11:50:00Z, completed 2026-11-23T11:58:30Z\n"
        "\n"
        "WAVE    PROGRESS              READY  STARTED   COMPLETED  CLUSTERS\n"
        f"canary  {FULL}  1/1    11:50:00  11:52:00   gpu-01\n"
        f"wave-1  {FULL}  1/1    11:52:00  11:58:30   gpu-02\n"
    )
    assert (result.exit_code, result.stderr) == (0, "")


def test_status_as_json_gives_the_record_and_each_cluster(api, tmp_path):
    api.objects[PROFILE] = profile(complete())
    api.collections[DEPLOYMENTS] = [
        deployment("gpu-02", H3, generation=4, observed=3),
        deployment("gpu-01", H3),
        deployment("gpu-03", H2, phase=None),
    ]
    result = rollout(api, tmp_path, "status", "app", "-n", "ns", "-o", "json")
    assert (result.exit_code, result.stderr) == (0, "")
    assert json.loads(result.stdout) == {
        "profile": "app",
        "namespace": "ns",
        "rollout": complete(),
        "clusters": {
            "gpu-01": {"revision": H3, "phase": "Ready", "ready": True},
            "gpu-02": {"revision": H3, "phase": "Ready", "ready": False},
            "gpu-03": {"revision": H2, "phase": "Pending", "ready": False},
        },
    }
    assert api.requests == [PROFILE, DEPLOYMENTS + SELECTOR, *ADDON_READS]


def test_status_without_spec_rollout_explains_that_there_is_none(api, tmp_path):
    api.objects[PROFILE] = profile(spec_rollout=False)
    api.collections[DEPLOYMENTS] = [deployment("gpu-01", H3), deployment("gpu-02", H2)]
    result = rollout(api, tmp_path, "status", "app", "-n", "ns")
    assert result.stdout == (
        "AddonProfile ns/app: no spec.rollout, so every cluster gets a new revision at once\n"
        f"revision {H3}: 1/2 clusters Ready on it\n"
    )
    assert (result.exit_code, result.stderr) == (0, "")


def test_status_of_a_missing_profile_exits_1(api, tmp_path):
    result = rollout(api, tmp_path, "status", "app", "-n", "ns")
    assert result.stdout == ""
    assert result.stderr == (
        "error: cannot read the management cluster: AddonProfile ns/app not found\n"
    )
    assert result.exit_code == 1
    assert api.requests == [PROFILE]


def history_fixture(api):
    api.objects[PROFILE] = profile(record(total=3, updated=2))
    api.collections[REVISIONS] = [
        revision(3, "2026-11-23T11:49:58Z"),
        revision(1, "2026-11-20T09:00:00Z"),
        revision(2, "2026-11-21T15:30:00Z"),
    ]
    api.collections[DEPLOYMENTS] = [
        deployment("gpu-03", H2),
        deployment("gpu-01", H3),
        deployment("gpu-02", H3, phase="Applying"),
    ]


def test_history_lists_the_kept_revisions_oldest_first(api, tmp_path):
    history_fixture(api)
    result = rollout(api, tmp_path, "history", "app", "-n", "ns")
    assert result.stdout == (
        "REVISION  HASH          CREATED               CLUSTERS            CHANGE\n"
        f"1         {H1}  2026-11-20T09:00:00Z  0                   first revision\n"
        f"2         {H2}  2026-11-21T15:30:00Z  1         previous  +dcgm-exporter\n"
        f"3         {H3}  2026-11-23T11:49:58Z  2         target    "
        "gpu-operator (addon, values)\n"
    )
    assert (result.exit_code, result.stderr) == (0, "")
    assert api.requests == [PROFILE, REVISIONS + SELECTOR, DEPLOYMENTS + SELECTOR]


def test_history_as_json(api, tmp_path):
    history_fixture(api)
    result = rollout(api, tmp_path, "history", "app", "-n", "ns", "-o", "json")
    assert (result.exit_code, result.stderr) == (0, "")
    assert json.loads(result.stdout) == [
        {
            "revision": 1,
            "hash": H1,
            "name": f"app-{H1}",
            "created": "2026-11-20T09:00:00Z",
            "clusters": [],
            "mark": "",
            "change": "first revision",
        },
        {
            "revision": 2,
            "hash": H2,
            "name": f"app-{H2}",
            "created": "2026-11-21T15:30:00Z",
            "clusters": ["gpu-03"],
            "mark": "previous",
            "change": "+dcgm-exporter",
        },
        {
            "revision": 3,
            "hash": H3,
            "name": f"app-{H3}",
            "created": "2026-11-23T11:49:58Z",
            "clusters": ["gpu-01", "gpu-02"],
            "mark": "target",
            "change": "gpu-operator (addon, values)",
        },
    ]


@pytest.mark.parametrize("command", ["pause", "undo"])
def test_a_profile_without_spec_rollout_has_nothing_to_steer(api, tmp_path, patches, command):
    api.objects[PROFILE] = profile(record(), spec_rollout=False)
    result = rollout(api, tmp_path, command, "app", "-n", "ns")
    assert result.stdout == ""
    assert result.stderr == (
        "error: AddonProfile ns/app has no spec.rollout: its revisions reach every cluster "
        "at once, there is no rollout to steer\n"
    )
    assert result.exit_code == 1
    assert api.requests == [PROFILE]
    assert patches == []


def test_undo_without_a_previous_revision_is_refused(api, tmp_path, patches):
    api.objects[PROFILE] = profile(record(target=H1, previous=None), revision=H1)
    result = rollout(api, tmp_path, "undo", "app", "-n", "ns")
    assert result.stdout == ""
    assert result.stderr == (
        f"error: AddonProfile ns/app: there is no revision before {H1} to go back to\n"
    )
    assert result.exit_code == 1
    assert api.requests == [PROFILE]
    assert patches == []


# Beside the refusals above: the same commands on a planned rollout do write, so the
# fixture's PATCH handler does see a write when there is one.
@pytest.mark.parametrize(
    ("command", "annotations", "said"),
    [
        ("pause", {"rollout.fleet.mlops.dev/paused": "true"}, f"rollout of {H3} paused"),
        (
            "resume",
            {"rollout.fleet.mlops.dev/paused": None, "rollout.fleet.mlops.dev/resume": H3},
            f"rollout of {H3} resumed",
        ),
        ("undo", {"rollout.fleet.mlops.dev/undo": H3}, f"rolling back from {H3} to {H2}"),
    ],
)
def test_steering_a_planned_rollout_annotates_the_profile(
    api, tmp_path, patches, command, annotations, said
):
    api.objects[PROFILE] = profile(record(phase="Paused"))
    result = rollout(api, tmp_path, command, "app", "-n", "ns")
    assert result.stdout == f"AddonProfile ns/app: {said}\n"
    assert (result.exit_code, result.stderr) == (0, "")
    assert api.requests == [PROFILE, f"PATCH {PROFILE}"]
    assert patches == [{"metadata": {"annotations": annotations}}]


def test_help_lists_the_five_commands():
    result = CliRunner().invoke(cli, ["rollout", "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    listed = result.stdout.split("Commands:\n", 1)[1].splitlines()
    assert sorted(line.split()[0] for line in listed if line.strip()) == [
        "history",
        "pause",
        "resume",
        "status",
        "undo",
    ]
