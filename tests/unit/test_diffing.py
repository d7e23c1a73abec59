"""`fleet diff` shows only what an apply would change."""

from fleet.diffing import normalized, unified


def config_map(data, **meta):
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "app", **meta},
        "data": data,
    }


def test_what_the_server_sets_on_its_own_is_left_out():
    live = config_map(
        {"mode": "fast"},
        resourceVersion="7",
        uid="u",
        managedFields=[{"manager": "fleet"}],
        creationTimestamp="2026-11-26T00:00:00Z",
        generation=1,
    )
    live["status"] = {"observed": True}
    assert normalized(live) == config_map({"mode": "fast"})
    assert unified(live, config_map({"mode": "fast"}, resourceVersion="8")) == ()


def test_a_changed_field_is_one_removed_and_one_added_line():
    lines = unified(config_map({"mode": "fast"}), config_map({"mode": "slow"}))
    assert [line for line in lines if line[:1] in "+-"] == ["-  mode: fast", "+  mode: slow"]


def test_created_and_deleted_objects_are_all_added_or_all_removed():
    created = unified(None, config_map({"mode": "fast"}))
    assert created and all(line.startswith(("+", "@@")) for line in created)
    deleted = unified(config_map({"mode": "fast"}), None)
    assert deleted and all(line.startswith(("-", "@@")) for line in deleted)
