"""What the node agent deletes from its model cache: the rules one by one, then their
properties over generated caches (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.agent.gc import BadWatermarks, CacheItem, Watermarks, freed_bytes, plan_gc

NOW = 1_000_000.0
GIB = 1 << 30


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def blob(n: int, size: int) -> tuple[str, int]:
    return (f"{n:064x}", size)


def model(name: str, at: int, *blobs: tuple[str, int], last_used: float = NOW) -> CacheItem:
    size = sum(s for _, s in blobs)
    return CacheItem("model", name, digest(at), size, last_used, model=name, blobs=frozenset(blobs))


def tree(at: int, owner: str, *blobs: tuple[str, int], last_used: float = NOW) -> CacheItem:
    size = sum(s for _, s in blobs)
    return CacheItem(
        "tree", f"{at:064x}", digest(at), size, last_used, model=owner, blobs=frozenset(blobs)
    )


def partial(n: int, size: int, owner: str, artifact: int, last_used: float = NOW) -> CacheItem:
    return CacheItem(
        "partial",
        f"{n:064x}",
        digest(n),
        size,
        last_used,
        model=owner,
        artifact=digest(artifact),
    )


def plan(
    items: list[CacheItem],
    *,
    assigned: dict[str, str] | None = None,
    in_use: set[str] | None = None,
    used: int | None = None,
    capacity: int = 100 * GIB,
    keep: float = 0.0,
    watermarks: Watermarks | None = None,
) -> list[CacheItem]:
    return plan_gc(
        items,
        assigned=assigned or {},
        in_use=in_use or set(),
        used_bytes=used if used is not None else sum(i.size_bytes for i in items),
        capacity_bytes=capacity,
        watermarks=watermarks or Watermarks(),
        now=NOW,
        keep_unassigned_seconds=keep,
    )


# The rules


def test_an_unassigned_model_no_pod_uses_goes_at_once_without_a_grace_period():
    gone = model("old", 1, blob(1, 10))
    kept = model("llama", 2, blob(2, 10))
    assert plan([gone, kept], assigned={"llama": digest(2)}) == [gone]


def test_an_unassigned_model_is_kept_for_its_grace_period_then_deleted():
    recent = model("recent", 1, blob(1, 10), last_used=NOW - 60)
    stale = model("stale", 2, blob(2, 10), last_used=NOW - 3600)
    assert plan([recent, stale], keep=600) == [stale]


def test_a_model_in_use_is_kept_even_when_unassigned():
    used = model("serving", 1, blob(1, 10), last_used=0)
    assert plan([used], in_use={"serving"}) == []


def test_an_old_tree_goes_unless_its_model_is_in_use_or_assigned_at_it():
    old = tree(1, "llama", blob(1, 10))
    mounted = tree(2, "serving", blob(2, 10))
    rollback = tree(3, "mistral", blob(3, 10))
    current = model("llama", 4, blob(4, 10))
    items = [old, mounted, rollback, current]
    assigned = {"llama": digest(4), "mistral": digest(3)}
    assert plan(items, assigned=assigned, in_use={"serving"}) == [old]


def test_a_partial_of_the_assigned_pull_is_kept_one_of_no_assigned_model_goes():
    resuming = partial(1, 5, "llama", artifact=9)
    orphan = partial(2, 5, "gone", artifact=8)
    unknown = partial(3, 5, "", artifact=0)
    assert plan([resuming, orphan, unknown], assigned={"llama": digest(9)}) == [orphan, unknown]


def test_a_partial_of_another_version_of_an_assigned_model_goes_only_under_pressure():
    other_version = partial(1, 50 * GIB, "llama", artifact=7)
    assert plan([other_version], assigned={"llama": digest(9)}, used=50 * GIB) == []
    assert plan([other_version], assigned={"llama": digest(9)}, used=90 * GIB) == [other_version]


def test_under_pressure_models_kept_by_the_grace_period_go_least_recently_used_first():
    oldest = model("a", 1, blob(1, 10 * GIB), last_used=NOW - 300)
    newer = model("b", 2, blob(2, 10 * GIB), last_used=NOW - 200)
    newest = model("c", 3, blob(3, 10 * GIB), last_used=NOW - 100)
    pinned = model("d", 4, blob(4, 60 * GIB))
    items = [newest, pinned, oldest, newer]
    # 90 GiB of 100 is above 85%: evict until at most 75%, two models (90 -> 70).
    assert plan(items, assigned={"d": digest(4)}, keep=3600) == [oldest, newer]
    # Below the high watermark the grace period holds.
    assert plan(items, assigned={"d": digest(4)}, keep=3600, used=80 * GIB) == []


def test_deleting_an_old_version_frees_only_the_bytes_the_new_one_does_not_share():
    weights, old_config, new_config = blob(1, 40 * GIB), blob(2, 1), blob(3, 2)
    old = model("old-name", 5, weights, old_config, last_used=NOW - 100)
    new = model("llama", 6, weights, new_config)
    other = model("other", 7, blob(4, 30 * GIB), last_used=NOW - 50)
    items = [old, new, other]
    # 70 GiB + 3 bytes used: deleting `old` frees 1 byte, so `other` must go as well.
    assert plan(items, assigned={"llama": digest(6)}, keep=3600) == [old, other]
    assert freed_bytes(items, [old]) == 1
    assert freed_bytes(items, [old, new]) == 40 * GIB + 3


def test_an_assigned_models_tree_is_never_evicted_however_full():
    current = model("llama", 1, blob(1, 99 * GIB))
    assert plan([current], assigned={"llama": digest(1)}) == []


@pytest.mark.parametrize(("high", "low"), [(0.5, 0.5), (0.5, 0.7), (1.1, 0.5), (0.5, 0.0)])
def test_watermarks_must_be_fractions_with_low_below_high(high, low):
    with pytest.raises(BadWatermarks, match="0 < low < high <= 1"):
        Watermarks(high=high, low=low)


# Properties

NAMES = ["a", "b", "c", "d", "e"]


@st.composite
def caches(draw):
    """A cache as the store lists it: models and old trees over a pool of shared blobs,
    partials; and what is assigned and in use."""
    pool = [
        blob(n, size)
        for n, size in enumerate(draw(st.lists(st.integers(1, 1000), min_size=1, max_size=8)))
    ]
    blobs = st.frozensets(st.sampled_from(pool), max_size=4)
    times = st.floats(NOW - 10_000, NOW)
    items: list[CacheItem] = []
    artifacts = st.integers(100, 120)
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True)):
        held = draw(blobs)
        items.append(
            CacheItem(
                "model",
                name,
                digest(draw(artifacts)),
                sum(s for _, s in held),
                draw(times),
                model=name,
                blobs=held,
            )
        )
    pointed = {i.digest for i in items}
    for at in draw(st.lists(artifacts, unique=True, max_size=5)):
        if digest(at) in pointed:
            continue
        held = draw(blobs)
        owner = draw(st.sampled_from(["", *NAMES]))
        items.append(
            CacheItem(
                "tree",
                f"{at:064x}",
                digest(at),
                sum(s for _, s in held),
                draw(times),
                model=owner,
                blobs=held,
            )
        )
    for n in draw(st.lists(st.integers(200, 210), unique=True, max_size=3)):
        owner = draw(st.sampled_from(["", *NAMES]))
        items.append(
            partial(n, draw(st.integers(1, 500)), owner, draw(artifacts), last_used=draw(times))
        )
    assigned = {name: digest(draw(artifacts)) for name in draw(st.lists(st.sampled_from(NAMES)))}
    in_use = set(draw(st.lists(st.sampled_from(NAMES))))
    stored = sum(s for _, s in {(b, s) for i in items for b, s in i.blobs}) + sum(
        i.size_bytes for i in items if i.kind == "partial"
    )
    used = stored + draw(st.integers(0, 300))  # blobs no tree links yet, being swept
    capacity = draw(st.integers(max(1, stored // 2), stored * 2 + 1000))
    low = draw(st.floats(0.05, 0.9))
    high = draw(st.floats(low + 0.01, 1.0))
    keep = draw(st.sampled_from([0.0, 1000.0, 5000.0]))
    return items, assigned, in_use, used, capacity, Watermarks(high=high, low=low), keep


def run(cache, items=None) -> list[CacheItem]:
    listed, assigned, in_use, used, capacity, watermarks, keep = cache
    return plan_gc(
        listed if items is None else items,
        assigned=assigned,
        in_use=in_use,
        used_bytes=used,
        capacity_bytes=capacity,
        watermarks=watermarks,
        now=NOW,
        keep_unassigned_seconds=keep,
    )


def freed(items: list[CacheItem], deleted: list[CacheItem]) -> int:
    """The oracle: partials whole; a blob when no model or tree left links it."""
    kept_blobs = {b for i in items if i not in deleted for b, _ in i.blobs}
    gone_blobs = {(b, s) for i in deleted for b, s in i.blobs if b not in kept_blobs}
    return sum(s for _, s in gone_blobs) + sum(i.size_bytes for i in deleted if i.kind == "partial")


def protected(item: CacheItem, assigned: dict[str, str], in_use: set[str]) -> bool:
    if item.kind == "model":
        return item.name in assigned or item.name in in_use
    if item.kind == "tree":
        return item.model in in_use or item.digest in assigned.values()
    return assigned.get(item.model) == item.artifact


def unconditional(item: CacheItem, assigned: dict[str, str], in_use: set[str], keep: float):
    if protected(item, assigned, in_use):
        return False
    if item.kind == "model":
        return keep == 0 or NOW - item.last_used >= keep
    if item.kind == "partial":
        return item.model not in assigned
    return True


@settings(max_examples=200, deadline=None)
@given(caches())
def test_nothing_in_use_and_no_assigned_version_is_ever_deleted(cache):
    _, assigned, in_use, *_ = cache
    for item in run(cache):
        assert item.owner not in in_use or item.kind == "partial"
        assert not protected(item, assigned, in_use)
        if item.kind == "model":
            assert item.name not in assigned
        if item.kind == "tree":
            assert item.digest not in assigned.values()


@settings(max_examples=200, deadline=None)
@given(caches(), st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_the_order_items_are_listed_in(cache, shuffler):
    items = list(cache[0])
    shuffler.shuffle(items)
    assert run(cache, items) == run(cache)
    assert len(set(run(cache))) == len(run(cache))


@settings(max_examples=200, deadline=None)
@given(caches())
def test_above_the_high_watermark_the_cache_ends_at_the_low_one_when_it_can(cache):
    items, assigned, in_use, used, capacity, watermarks, keep = cache
    deleted = run(cache)
    deletable = [i for i in items if not protected(i, assigned, in_use)]
    first = [i for i in items if unconditional(i, assigned, in_use, keep)]
    if used - freed(items, first) <= watermarks.high * capacity:
        return
    after = used - freed(items, deleted)
    if used - freed(items, deletable) <= watermarks.low * capacity:
        assert after <= watermarks.low * capacity
    else:
        assert set(deleted) == set(deletable)


@settings(max_examples=200, deadline=None)
@given(caches())
def test_below_the_high_watermark_only_what_goes_in_any_case_is_deleted(cache):
    items, assigned, in_use, used, capacity, watermarks, keep = cache
    first = [i for i in items if unconditional(i, assigned, in_use, keep)]
    deleted = run(cache)
    if used - freed(items, first) <= watermarks.high * capacity:
        assert set(deleted) == set(first)
    else:
        assert set(first) <= set(deleted)
    assert set(deleted[: len(first)]) == set(first)  # what goes in any case goes first
