import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.api.models import AddonEntry
from fleet.order import DependencyCycle, apply_sorted, delete_sorted, dependency_order


def obj(kind, name="x", namespace=""):
    return {"kind": kind, "metadata": {"name": name, "namespace": namespace}}


def test_crds_and_namespaces_first_webhooks_last_and_delete_reverses():
    objects = [
        obj("MutatingWebhookConfiguration"),
        obj("Deployment"),
        obj("Widget"),
        obj("Namespace"),
        obj("CustomResourceDefinition"),
        obj("ServiceAccount"),
    ]
    kinds = [o["kind"] for o in apply_sorted(objects)]
    assert kinds == [
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "Deployment",
        "Widget",
        "MutatingWebhookConfiguration",
    ]
    assert [o["kind"] for o in delete_sorted(objects)] == list(reversed(kinds))


def entry(name, *depends):
    return AddonEntry(name=name, values={}, depends_on=depends)


def test_dependencies_come_first_and_ties_keep_profile_order():
    ordered = dependency_order(
        [
            entry("cache", "operator"),
            entry("monitoring"),
            entry("operator", "cert-manager"),
            entry("cert-manager"),
        ]
    )
    assert [e.name for e in ordered] == ["cert-manager", "operator", "cache", "monitoring"]


def test_a_cycle_is_named():
    with pytest.raises(DependencyCycle, match="a -> b -> c -> a"):
        dependency_order([entry("a", "b"), entry("b", "c"), entry("c", "a")])


@given(
    st.lists(st.integers(0, 7), min_size=1, max_size=8, unique=True).flatmap(
        lambda ids: st.tuples(
            st.just(ids), st.lists(st.tuples(st.sampled_from(ids), st.sampled_from(ids)))
        )
    )
)
def test_every_acyclic_graph_is_ordered_with_dependencies_first(graph):
    ids, edges = graph
    # keep only edges from higher to lower ids: always acyclic
    deps = {i: tuple(sorted({f"a{b}" for a, b in edges if a == i and b < i})) for i in ids}
    ordered = [e.name for e in dependency_order([entry(f"a{i}", *deps[i]) for i in ids])]
    assert sorted(ordered) == sorted(f"a{i}" for i in ids)
    for i in ids:
        for dependency in deps[i]:
            assert ordered.index(dependency) < ordered.index(f"a{i}")
