"""A profile's revisions: what they hold, their names, their ControllerRevisions,
which are pruned, and what each changed."""

from hypothesis import given
from hypothesis import strategies as st

from fleet.api import API_VERSION, LABEL_PROFILE, LABEL_REVISION
from fleet.revisions import (
    HASH_LENGTH,
    NAME_LIMIT,
    Snapshot,
    change,
    content,
    next_number,
    parse_snapshot,
    revision_hash,
    snapshot_body,
    snapshot_name,
    to_prune,
)

ADDONS = [
    {"name": "cert-manager", "values": {"replicas": 1}},
    {"name": "gpu-operator", "values": {"mig": "single"}, "dependsOn": ["cert-manager"]},
]
SPECS = {
    "cert-manager": {"chart": {"name": "cert-manager", "version": "1.14.0"}},
    "gpu-operator": {"chart": {"name": "gpu-operator", "version": "24.3.0"}},
}
PROFILE = {
    "metadata": {"name": "gpus", "namespace": "fleet-system", "uid": "0c1d-42"},
    "spec": {"addons": ADDONS},
}


def spec(**extra):
    return {"addons": ADDONS, **extra}


def snap(number, addons=ADDONS, specs=SPECS, hash_=None, created=""):
    held = content({"addons": addons}, specs)
    h = hash_ if hash_ is not None else revision_hash(held)
    return Snapshot(f"gpus-{h}", h, number, created, held)


def test_content_holds_only_the_addon_list_and_the_addon_specs():
    held = content(
        spec(selector={"matchLabels": {"gpu": "true"}}, rollout={"maxUnavailable": 1}), SPECS
    )

    assert held == {"addons": ADDONS, "addonSpecs": SPECS}


def test_content_of_a_profile_without_addons_is_an_empty_list():
    assert content({}, {}) == {"addons": [], "addonSpecs": {}}
    assert content({"addons": None}, {}) == {"addons": [], "addonSpecs": {}}


def test_selector_rollout_and_sync_mode_do_not_change_the_hash():
    plain = spec()
    dressed = spec(
        selector={"matchLabels": {"dc": "west"}},
        rollout={"canaries": 1, "waves": [{"maxClusters": 2}]},
        syncMode="OneShot",
        paused=True,
        revisionHistoryLimit=3,
    )

    assert revision_hash(content(plain, SPECS)) == revision_hash(content(dressed, SPECS))


def test_the_hash_is_a_fixed_length_of_hex():
    h = revision_hash(content(spec(), SPECS))

    assert len(h) == HASH_LENGTH
    assert set(h) <= set("0123456789abcdef")


def test_the_hash_changes_when_an_addon_spec_changes():
    bumped = {**SPECS, "gpu-operator": {"chart": {"name": "gpu-operator", "version": "24.6.0"}}}

    assert revision_hash(content(spec(), SPECS)) != revision_hash(content(spec(), bumped))


def test_the_hash_changes_when_an_addon_spec_goes_missing():
    gone = {**SPECS, "gpu-operator": None}

    assert revision_hash(content(spec(), SPECS)) != revision_hash(content(spec(), gone))


def test_the_hash_changes_when_an_addons_values_change():
    changed = [ADDONS[0], {**ADDONS[1], "values": {"mig": "mixed"}}]

    assert revision_hash(content(spec(), SPECS)) != revision_hash(
        content({"addons": changed}, SPECS)
    )


def test_the_hash_does_not_depend_on_key_order_in_the_specs():
    reordered = dict(reversed(list(SPECS.items())))

    assert revision_hash(content(spec(), SPECS)) == revision_hash(content(spec(), reordered))


def test_a_snapshot_is_named_after_the_profile_and_the_hash():
    assert snapshot_name("gpus", "0123456789ab") == "gpus-0123456789ab"


def test_a_snapshot_of_a_very_long_profile_stays_within_the_name_limit_and_ends_with_the_hash():
    h = "0123456789ab"
    name = snapshot_name("p" * 300, h)

    assert len(name) == NAME_LIMIT
    assert name.endswith(f"-{h}")
    assert name.startswith("p" * (NAME_LIMIT - HASH_LENGTH - 1))


@given(profile=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=400))
def test_every_snapshot_name_fits_and_ends_with_its_hash(profile):
    h = "fedcba987654"
    name = snapshot_name(profile, h)

    assert len(name) <= NAME_LIMIT
    assert name.endswith(f"-{h}")


def test_a_snapshot_body_is_a_controller_revision_owned_by_the_profile():
    held = content(PROFILE["spec"], SPECS)
    h = revision_hash(held)
    body = snapshot_body(PROFILE, h, held, 4)

    assert body["apiVersion"] == "apps/v1"
    assert body["kind"] == "ControllerRevision"
    assert body["metadata"]["namespace"] == "fleet-system"
    assert body["metadata"]["labels"] == {LABEL_PROFILE: "gpus", LABEL_REVISION: h}
    assert body["metadata"]["ownerReferences"] == [
        {
            "apiVersion": API_VERSION,
            "kind": "AddonProfile",
            "name": "gpus",
            "uid": "0c1d-42",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert body["revision"] == 4
    assert body["data"] == held


def test_a_snapshot_body_reads_back_as_the_same_snapshot():
    held = content(PROFILE["spec"], SPECS)
    h = revision_hash(held)
    body = snapshot_body(PROFILE, h, held, 7)
    body["metadata"]["creationTimestamp"] = "2024-05-01T10:00:00Z"

    back = parse_snapshot(body)

    assert back == Snapshot(f"gpus-{h}", h, 7, "2024-05-01T10:00:00Z", held)
    assert back.addons == ADDONS
    assert back.addon_specs == SPECS


def test_a_snapshot_without_labels_revision_or_data_reads_back_empty():
    back = parse_snapshot({"metadata": {"name": "gpus-x"}})

    assert back == Snapshot("gpus-x", "", 0, "", {})
    assert back.addons == []
    assert back.addon_specs == {}


def test_the_first_revision_is_number_one():
    assert next_number([]) == 1


def test_the_next_revision_number_is_one_past_the_highest():
    assert next_number([snap(3, hash_="a"), snap(9, hash_="b"), snap(5, hash_="c")]) == 10


def test_pruning_keeps_the_newest_by_number():
    snaps = [snap(n, hash_=f"h{n}") for n in (4, 1, 5, 2, 3)]

    assert to_prune(snaps, 2, set()) == ["gpus-h1", "gpus-h2", "gpus-h3"]


def test_pruning_never_removes_a_revision_in_use():
    snaps = [snap(n, hash_=f"h{n}") for n in range(1, 6)]

    assert to_prune(snaps, 1, {"h2", "h4"}) == ["gpus-h1", "gpus-h3"]


def test_nothing_is_pruned_while_there_are_no_more_than_keep():
    snaps = [snap(n, hash_=f"h{n}") for n in range(1, 4)]

    assert to_prune(snaps, 3, set()) == []
    assert to_prune(snaps, 10, set()) == []


def test_keeping_none_prunes_every_revision_not_in_use():
    snaps = [snap(n, hash_=f"h{n}") for n in range(1, 4)]

    assert to_prune(snaps, 0, {"h2"}) == ["gpus-h1", "gpus-h3"]


snapshot_sets = st.lists(
    st.integers(min_value=1, max_value=200), min_size=0, max_size=30, unique=True
).map(lambda numbers: [snap(n, hash_=f"h{n}") for n in numbers])


@given(
    snaps=snapshot_sets,
    keep=st.integers(min_value=0, max_value=35),
    used=st.sets(st.integers(min_value=1, max_value=200), max_size=15),
)
def test_pruning_removes_only_old_unused_revisions_and_keeps_the_rest(snaps, keep, used):
    in_use = {f"h{n}" for n in used}
    newest = {s.name for s in sorted(snaps, key=lambda s: s.number, reverse=True)[:keep]}

    pruned = to_prune(snaps, keep, in_use)

    assert pruned == sorted(pruned)
    assert len(pruned) == len(set(pruned))
    by_name = {s.name: s for s in snaps}
    for name in pruned:
        assert name not in newest
        assert by_name[name].hash not in in_use
    for s in snaps:
        if s.name not in pruned:
            assert s.name in newest or s.hash in in_use


def test_the_oldest_kept_revision_is_the_first():
    assert change(None, snap(1)) == "first revision"


def test_added_and_removed_addons_show_as_plus_and_minus():
    before = snap(1, addons=[ADDONS[0], {"name": "old-thing"}])
    after = snap(2, addons=[ADDONS[0], ADDONS[1]])

    assert change(before, after) == "+gpu-operator, -old-thing"


def test_a_changed_addon_spec_names_the_addon():
    bumped = {**SPECS, "cert-manager": {"chart": {"name": "cert-manager", "version": "1.15.0"}}}

    assert change(snap(1), snap(2, specs=bumped)) == "cert-manager (addon)"


def test_changed_values_name_the_addon():
    changed = [ADDONS[0], {**ADDONS[1], "values": {"mig": "mixed"}}]

    assert change(snap(1), snap(2, addons=changed)) == "gpu-operator (values)"


def test_a_changed_spec_and_values_are_both_named():
    changed = [{**ADDONS[0], "values": {"replicas": 3}}, ADDONS[1]]
    bumped = {**SPECS, "cert-manager": {"chart": {"name": "cert-manager", "version": "1.15.0"}}}

    assert change(snap(1), snap(2, addons=changed, specs=bumped)) == (
        "cert-manager (addon, values)"
    )


def test_changed_dependencies_name_the_addon():
    changed = [ADDONS[0], {**ADDONS[1], "dependsOn": []}]

    assert change(snap(1), snap(2, addons=changed)) == "gpu-operator (dependsOn)"


def test_reordered_addons_are_an_order_change():
    assert change(snap(1), snap(2, addons=list(reversed(ADDONS)))) == "order"


def test_an_identical_revision_is_no_change():
    assert change(snap(1), snap(2)) == "no change"


def test_several_changes_are_listed_together():
    before = snap(1, addons=[ADDONS[0], ADDONS[1]])
    after = snap(2, addons=[{**ADDONS[0], "values": {}}, {"name": "dcgm"}])

    assert change(before, after) == "+dcgm, -gpu-operator, cert-manager (values)"
