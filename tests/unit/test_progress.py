"""Convergence counts for `fleet wait` and `fleet status --watch`."""

import click
import pytest

from fleet.cli.wait import parse_duration
from fleet.progress import progress


def deployment(cluster, phase, applied="r2", wanted="r2", message=""):
    return {
        "metadata": {"namespace": "fleet", "name": f"p-{cluster}"},
        "spec": {"profile": "p", "cluster": cluster, "revision": wanted},
        "status": {"phase": phase, "appliedRevision": applied, "message": message},
    }


def test_ready_only_at_the_wanted_revision_and_every_laggard_named():
    found = progress(
        [
            deployment("a", "Ready"),
            deployment("b", "Ready", applied="r1"),  # the new revision has not landed
            deployment("c", "Failed", message="Addon fleet/x not found"),
        ],
        expected=["fleet/a", "fleet/b", "fleet/c", "fleet/d"],
    )
    assert (found.total, found.ready, found.applying, found.failed) == (4, 1, 2, 1)
    assert not found.done
    assert [str(lag) for lag in found.laggards] == [
        "fleet/b (p): Applying",
        "fleet/c (p): Failed: Addon fleet/x not found",
        "fleet/d: Pending: no AddonDeployment yet",
    ]
    assert found.line() == "1/4 Ready, 2 applying, 1 failed"


def test_done_when_every_expected_cluster_is_ready_and_never_when_there_is_nothing():
    assert progress([deployment("a", "Ready")], expected=["fleet/a"]).done
    assert not progress([]).done


def test_a_profile_rolling_out_is_done_only_when_every_cluster_is_on_its_revision():
    on_old = deployment("a", "Ready")
    on_old["spec"]["profileRevision"] = "old"
    on_new = deployment("b", "Ready")
    on_new["spec"]["profileRevision"] = "new"
    found = progress([on_old, on_new], expected=["fleet/a", "fleet/b"], target="new")
    assert (found.ready, found.applying, found.done) == (1, 1, False)
    assert [str(lag) for lag in found.laggards] == [
        "fleet/a (p): Pending: waiting for its wave: on revision old, rolling out new"
    ]
    on_old["spec"]["profileRevision"] = "new"
    assert progress([on_old, on_new], target="new").done


@pytest.mark.parametrize(
    ("text", "seconds"), [("300", 300), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2.5s", 2.5)]
)
def test_durations_read_as_kubectl_reads_them(text, seconds):
    assert parse_duration(None, None, text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "m5", "-1s"])
def test_a_bad_duration_is_a_usage_error(text):
    with pytest.raises(click.BadParameter, match="is not a duration"):
        parse_duration(None, None, text)
