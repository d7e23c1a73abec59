from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fleet.nodelabels import changes, labelled, manager, owned_keys, selected

MANAGER = manager("applyset-abc-v1")
SELECTOR = {"nvidia.com/mig.capable": "true"}


def node(name: str, labels: dict[str, str], owned: tuple[str, ...] = (), rv: str = "7") -> dict:
    fields = {"f:metadata": {"f:labels": {f"f:{key}": {} for key in owned}}}
    managed = [{"manager": MANAGER, "operation": "Apply", "fieldsV1": fields}] if owned else []
    managed.append({"manager": "kubelet", "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}}})
    return {
        "metadata": {
            "name": name,
            "resourceVersion": rv,
            "labels": labels,
            "managedFields": managed,
        }
    }


def apply_changes(nodes: list[dict], todo) -> list[dict]:
    """What server-side apply does with each change: this manager's labels become exactly
    the applied ones; every other label stays."""
    by_name = {c.node: c for c in todo}
    result = []
    for n in nodes:
        change = by_name.get(n["metadata"]["name"])
        if change is None:
            result.append(n)
            continue
        mine = owned_keys(n, MANAGER)
        kept = {k: v for k, v in n["metadata"]["labels"].items() if k not in mine}
        labels = kept | dict(change.labels)
        result.append(node(n["metadata"]["name"], labels, tuple(change.labels)))
    return result


def test_labels_go_on_selected_nodes_only():
    nodes = [
        node("gpu-0", {"nvidia.com/mig.capable": "true"}),
        node("cpu-0", {}),
    ]
    todo = changes(nodes, SELECTOR, {"nvidia.com/mig.config": "all-1g.10gb"}, MANAGER)
    assert [(c.node, dict(c.labels)) for c in todo] == [
        ("gpu-0", {"nvidia.com/mig.config": "all-1g.10gb"})
    ]
    assert todo[0].body()["metadata"] == {
        "name": "gpu-0",
        "resourceVersion": "7",
        "labels": {"nvidia.com/mig.config": "all-1g.10gb"},
    }


def test_a_node_already_right_needs_nothing():
    nodes = [
        node(
            "gpu-0",
            {"nvidia.com/mig.capable": "true", "nvidia.com/mig.config": "all-1g.10gb"},
            ("nvidia.com/mig.config",),
        )
    ]
    assert changes(nodes, SELECTOR, {"nvidia.com/mig.config": "all-1g.10gb"}, MANAGER) == []
    assert labelled(nodes, MANAGER) == ["gpu-0"]


def test_an_empty_value_takes_the_label_off():
    nodes = [
        node(
            "gpu-0",
            {"nvidia.com/mig.capable": "true", "nvidia.com/mig.config": "all-1g.10gb"},
            ("nvidia.com/mig.config",),
        )
    ]
    todo = changes(nodes, SELECTOR, {"nvidia.com/mig.config": ""}, MANAGER)
    assert [(c.node, dict(c.labels)) for c in todo] == [("gpu-0", {})]


def test_a_label_set_by_someone_else_is_not_ours():
    nodes = [node("gpu-0", {"nvidia.com/mig.config": "all-disabled"})]
    assert owned_keys(nodes[0], MANAGER) == set()
    assert labelled(nodes, MANAGER) == []
    assert changes(nodes, {}, {}, MANAGER) == []


label_values = st.sampled_from(["", "all-1g.10gb", "all-3g.40gb"])
nodes_strategy = st.lists(
    st.tuples(st.booleans(), st.sampled_from(["", "all-disabled", "all-1g.10gb"]), st.booleans()),
    max_size=6,
)


@given(nodes_strategy, label_values)
def test_applying_the_changes_converges_and_touches_nothing_else(found, value):
    """After the applies: selected nodes carry the wanted label under this manager, the
    others carry none of its labels, other labels are unchanged; a second look finds
    nothing to do."""
    nodes = []
    for index, (capable, current, ours) in enumerate(found):
        labels = {"other": "x"}
        if capable:
            labels["nvidia.com/mig.capable"] = "true"
        if current:
            labels["nvidia.com/mig.config"] = current
        owned = ("nvidia.com/mig.config",) if ours and current else ()
        nodes.append(node(f"n{index}", labels, owned))
    wanted = {"nvidia.com/mig.config": value}
    after = apply_changes(nodes, changes(nodes, SELECTOR, wanted, MANAGER))
    assert changes(after, SELECTOR, wanted, MANAGER) == []
    for before, now in zip(nodes, after, strict=True):
        labels = now["metadata"]["labels"]
        assert labels["other"] == "x"
        if selected(before["metadata"]["labels"], SELECTOR) and value:
            assert labels["nvidia.com/mig.config"] == value
            assert owned_keys(now, MANAGER) == {"nvidia.com/mig.config"}
        else:
            assert owned_keys(now, MANAGER) == set()
