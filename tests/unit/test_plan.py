"""The plan step: what to apply, prune, refuse, and report, for each sync mode."""

from hypothesis import given
from hypothesis import strategies as st

from fleet.plan import (
    STRATEGIES,
    Live,
    ObjectKey,
    Plan,
    Record,
    Situation,
    fingerprint,
    live_object,
)

FLEET = "fleet"


def config_map(name: str, namespace: str = "app") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
    }


def live(body: dict, owned_fields: str = "a", managers: tuple[str, ...] = (FLEET,)) -> Live:
    fields = [
        {
            "manager": m,
            "operation": "Apply" if m == FLEET else "Update",
            "fieldsV1": {owned_fields: {}},
        }
        for m in managers
    ]
    meta = {**body["metadata"], "uid": f"uid-{body['metadata']['name']}", "managedFields": fields}
    return live_object({**body, "metadata": meta})


def situation(
    desired,
    found=(),
    foreign=None,
    applied="",
    revision="r2",
    known=None,
    drift=False,
    adopt=False,
    rendering_changed=False,
):
    owned = {o.key: o for o in found}
    return Situation(
        desired=tuple(desired),
        live=owned,
        foreign=foreign or {},
        adopt=adopt,
        revision=revision,
        applied_revision=applied,
        known=known if known is not None else {k: o.fingerprint for k, o in owned.items()},
        drift_check=drift,
        rendering_changed=rendering_changed,
    )


def test_a_new_rendering_at_the_same_revision_applies_everything_in_continuous_only():
    """The cluster's nodes changed what the templates make: fleet's fields are all still
    its own (no drift), yet every object is applied again."""
    a, b, c = config_map("a"), config_map("b"), config_map("c")
    found = [live(a), live(b), live(c)]
    changed = situation([a, b], found, applied="r2", rendering_changed=True)
    plan = STRATEGIES["Continuous"].plan(changed)
    assert plan.apply == (a, b) and [o.key.name for o in plan.prune] == ["c"]
    assert STRATEGIES["Continuous"].plan(situation([a, b], found, applied="r2")) == Plan()
    assert STRATEGIES["DryRun"].plan(changed).dry_run == (a, b)
    assert STRATEGIES["OneTime"].plan(changed).apply == ()


def test_a_new_revision_applies_everything_and_prunes_only_owned_objects_it_dropped():
    a, b, c = config_map("a"), config_map("b"), config_map("c")
    plan = STRATEGIES["Continuous"].plan(situation([a, b], [live(a), live(c)], applied="r1"))
    assert plan.apply == (a, b)
    assert [o.key.name for o in plan.prune] == ["c"]
    assert plan.applies_revision


def test_an_object_that_exists_without_the_label_is_a_conflict_unless_adopted():
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}
    key = ObjectKey.of(namespace)
    found = {key: ("kubectl-create",)}
    plan = STRATEGIES["Continuous"].plan(situation([namespace], foreign=found))
    assert plan.apply == () and plan.prune == ()
    assert plan.conflicts == (
        "Namespace team-a exists and was not created by this add-on "
        "(field managers: kubectl-create)",
    )
    adopted = STRATEGIES["Continuous"].plan(situation([namespace], foreign=found, adopt=True))
    assert adopted.apply == (namespace,) and not adopted.conflicts


def test_drift_check_reapplies_only_missing_or_changed_objects_and_names_the_writer():
    a, b, c = config_map("a"), config_map("b"), config_map("c")
    seen_a, seen_b = live(a), live(b)
    changed_b = live(b, owned_fields="other", managers=(FLEET, "kubectl-edit"))
    known = {seen_a.key: seen_a.fingerprint, seen_b.key: seen_b.fingerprint}
    plan = STRATEGIES["Continuous"].plan(
        situation([a, b, c], [seen_a, changed_b], applied="r2", known=known, drift=True)
    )
    assert plan.apply == (b, c)
    assert plan.drift == ("ConfigMap app/b (changed by kubectl-edit)", "ConfigMap app/c (missing)")
    quiet = STRATEGIES["Continuous"].plan(
        situation([a, b], [seen_a, seen_b], applied="r2", drift=True)
    )
    assert quiet.apply == () and quiet.prune == () and quiet.drift == ()


def test_without_a_drift_check_an_applied_revision_does_nothing():
    a = config_map("a")
    assert STRATEGIES["Continuous"].plan(situation([a], [live(a)], applied="r2")) == Plan()


def test_one_time_applies_once_and_then_takes_new_revisions_as_handled():
    a = config_map("a")
    assert STRATEGIES["OneTime"].plan(situation([a])).apply == (a,)
    later = STRATEGIES["OneTime"].plan(situation([a], applied="r1", drift=True))
    assert later == Plan(applies_revision=True)


def test_dry_run_never_applies_or_prunes():
    a, c = config_map("a"), config_map("c")
    plan = STRATEGIES["DryRun"].plan(situation([a], [live(c)], applied="r1"))
    assert plan.apply == () and plan.prune == ()
    assert plan.dry_run == (a,)
    assert plan.drift == ("ConfigMap app/c (would be pruned)",)


def test_fingerprint_covers_only_fleets_applied_fields():
    body = config_map("a")
    mine = live(body, managers=(FLEET,)).body
    with_other = live(body, managers=(FLEET, "someone")).body
    assert fingerprint(mine) == fingerprint(with_other)
    assert fingerprint(mine) != fingerprint(live(body, owned_fields="b").body)


def test_record_grows_to_cover_kinds_and_namespaces_and_never_shrinks():
    record = Record().covering(
        [
            config_map("a", "x"),
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "d", "namespace": "y"},
            },
        ]
    )
    assert record.to_json() == {
        "groupKinds": ["apps/v1/DaemonSet", "v1/ConfigMap"],
        "namespaces": ["x", "y"],
    }
    assert record.covering([]) == record
    assert record.kinds() == [("apps/v1", "DaemonSet"), ("v1", "ConfigMap")]
    assert Record.from_json(record.to_json()) == record


names = st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8)


@given(
    desired=names, present=names, applied=st.booleans(), mode=st.sampled_from(sorted(STRATEGIES))
)
def test_plans_never_prune_what_is_desired_and_never_touch_what_is_not_owned(
    desired, present, applied, mode
):
    wanted = [config_map(n) for n in desired]
    found = [live(config_map(n)) for n in present]
    plan = STRATEGIES[mode].plan(
        situation(wanted, found, applied="r2" if applied else "r1", drift=True)
    )
    pruned = {o.key.name for o in plan.prune}
    assert not pruned & set(desired)
    assert pruned <= set(present)
    assert {b["metadata"]["name"] for b in plan.apply} <= set(desired)
    if mode == "DryRun":
        assert plan.apply == () and plan.prune == ()


def test_record_narrowed_to_kinds_keeps_its_namespaces():
    record = Record(("apps/v1/DaemonSet", "v1/ConfigMap", "v1/Service"), ("x",))
    assert record.only({"DaemonSet", "Service"}) == Record(
        ("apps/v1/DaemonSet", "v1/Service"), ("x",)
    )
    assert record.only(set()).kinds() == []
