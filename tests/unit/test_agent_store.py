"""The node agent's content-addressed cache on a real directory: blobs, trees of hard
links, model symlinks, bookkeeping and deletion."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from fleet.agent.gc import CacheItem
from fleet.agent.store import CacheError, NoSpace, Store, human
from fleet.oci.modelpack import Entry, UnsafePath

CONFIG = b'{"model_type": "llama"}'
WEIGHTS = b"\x01\x02" * 4096
NEW_CONFIG = b'{"model_type": "llama", "v": 2}'


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put(store: Store, data: bytes) -> str:
    """A blob in the cache, the way a fetch leaves it."""
    digest = sha(data)
    store.partial_path(digest).write_bytes(data)
    store.commit_partial(digest)
    return digest


def entries(*files: tuple[str, bytes], mode: int | None = None) -> list[Entry]:
    return [Entry(path, sha(data), len(data), mode) for path, data in files]


def artifact(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "cache")


def test_a_store_makes_its_layout(store: Store):
    for part in ("blobs/sha256", "partial", "trees", "models"):
        assert (store.root / part).is_dir()
    assert store.names() == []
    assert store.free_bytes() > 0
    assert store.used_bytes() == 0


def test_a_committed_blob_is_complete_and_read_only(store: Store):
    digest = put(store, CONFIG)
    assert store.has_blob(digest)
    assert stat.S_IMODE(store.blob_path(digest).stat().st_mode) == 0o444
    assert store.partial_length(digest) == 0
    assert store.used_bytes() == len(CONFIG)


def test_what_is_missing_counts_each_blob_once_less_its_partial_bytes(store: Store):
    put(store, CONFIG)
    store.partial_path(sha(WEIGHTS)).write_bytes(WEIGHTS[:1000])
    files = entries(("config.json", CONFIG), ("a.bin", WEIGHTS), ("copy/a.bin", WEIGHTS))
    assert [e.path for e in store.missing(files)] == ["a.bin"]
    assert store.bytes_needed(files) == len(WEIGHTS) - 1000
    # A partial longer than its blob is wrong: all of it is needed again.
    store.partial_path(sha(WEIGHTS)).write_bytes(WEIGHTS + b"junk")
    assert store.bytes_needed(files) == len(WEIGHTS)


def test_a_tree_is_hard_links_of_blobs_and_the_model_points_at_it(store: Store):
    put(store, CONFIG)
    put(store, WEIGHTS)
    files = entries(("config.json", CONFIG), ("weights/a.bin", WEIGHTS))
    path = store.place_tree("llama", artifact(1), files, now=100.0)
    assert path == store.root / "models" / "llama"
    assert path.readlink() == Path(f"../trees/{1:064x}")
    assert (path / "weights" / "a.bin").read_bytes() == WEIGHTS
    linked = (path / "config.json").stat()
    assert linked.st_ino == store.blob_path(sha(CONFIG)).stat().st_ino
    assert linked.st_nlink == 2
    assert store.current("llama") == artifact(1)
    assert store.names() == ["llama"]
    assert not [p for p in store.trees.iterdir() if p.name.startswith(".")]


def test_a_new_version_shares_the_blobs_it_has_in_common(store: Store):
    for data in (CONFIG, WEIGHTS, NEW_CONFIG):
        put(store, data)
    store.place_tree("llama", artifact(1), entries(("config.json", CONFIG), ("a.bin", WEIGHTS)))
    store.place_tree(
        "llama", artifact(2), entries(("config.json", NEW_CONFIG), ("a.bin", WEIGHTS)), now=200.0
    )
    old, new = store.tree_path(artifact(1)), store.tree_path(artifact(2))
    assert store.current("llama") == artifact(2)
    assert (old / "a.bin").stat().st_ino == (new / "a.bin").stat().st_ino
    assert (new / "a.bin").stat().st_nlink == 3
    assert store.used_bytes() == len(CONFIG) + len(WEIGHTS) + len(NEW_CONFIG)
    [model, tree] = store.inventory()
    assert (model.kind, model.name, model.digest) == ("model", "llama", artifact(2))
    assert model.size_bytes == len(NEW_CONFIG) + len(WEIGHTS)
    assert (tree.kind, tree.digest, tree.model, tree.last_used) == (
        "tree",
        artifact(1),
        "llama",
        200.0,
    )
    assert {b for b, _ in tree.blobs} == {sha(CONFIG)[7:], sha(WEIGHTS)[7:]}


def test_a_blob_gets_the_executable_bits_its_entries_agree_on_and_never_write_bits(
    store: Store,
):
    script, shared = b"#!/bin/sh\n", b"same bytes"
    for data in (script, shared):
        put(store, data)
    files = [
        Entry("run.sh", sha(script), len(script), 0o755, 1_600_000_000_000_000_000),
        Entry("a.txt", sha(shared), len(shared), 0o644),
        Entry("b.sh", sha(shared), len(shared), 0o755),
    ]
    tree = store.place_tree("tools", artifact(3), files).resolve()
    run = (tree / "run.sh").stat()
    assert stat.S_IMODE(run.st_mode) == 0o555
    assert run.st_mtime_ns == 1_600_000_000_000_000_000
    assert stat.S_IMODE((tree / "a.txt").stat().st_mode) == 0o444  # entries disagree


def test_a_tree_needs_every_blob_and_refuses_clashing_or_unsafe_paths(store: Store):
    put(store, CONFIG)
    with pytest.raises(CacheError, match=r"blob sha256:\w+ of a.bin is not in the cache"):
        store.place_tree("m", artifact(4), entries(("a.bin", WEIGHTS)))
    with pytest.raises(CacheError, match="clashes with another file"):
        store.place_tree("m", artifact(4), entries(("x", CONFIG), ("x/y", CONFIG)))
    with pytest.raises(UnsafePath, match="climbs out"):
        store.place_tree("m", artifact(4), entries(("../x", CONFIG)))
    with pytest.raises(CacheError, match="not a file name"):
        store.place_tree("../m", artifact(4), entries(("x", CONFIG)))
    assert list(store.trees.iterdir()) == []
    assert list(store.models.iterdir()) == []


def test_sweeping_deletes_only_blobs_no_tree_links_and_no_pull_pins(store: Store):
    linked, loose, pinned = put(store, CONFIG), put(store, WEIGHTS), put(store, NEW_CONFIG)
    store.place_tree("m", artifact(5), entries(("c", CONFIG)))
    with store.pinned([pinned]):
        assert store.sweep_blobs() == len(WEIGHTS)
    assert store.has_blob(linked) and store.has_blob(pinned) and not store.has_blob(loose)


def test_a_tree_a_model_points_at_or_a_pull_pins_is_not_removed(store: Store):
    put(store, CONFIG)
    store.place_tree("m", artifact(6), entries(("c", CONFIG)))
    assert not store.remove_tree(f"{6:064x}")
    assert store.remove_model("m")
    with store.pinned([artifact(6)]):
        assert not store.remove_tree(artifact(6))
    assert store.remove_tree(f"{6:064x}")
    assert not store.tree_path(artifact(6)).exists()
    assert store.sweep_blobs() == len(CONFIG)
    assert store.used_bytes() == 0


def test_deleting_a_gc_plan_removes_the_model_its_tree_and_the_blobs_left_alone(store: Store):
    for data in (CONFIG, WEIGHTS):
        put(store, data)
    store.place_tree("a", artifact(7), entries(("c", CONFIG), ("w", WEIGHTS)))
    store.place_tree("b", artifact(8), entries(("w", WEIGHTS)))
    store.partial_path(sha(b"half")).write_bytes(b"ha")
    doomed = [i for i in store.inventory() if i.name in ("a", sha(b"half")[7:])]
    assert [i.kind for i in doomed] == ["model", "partial"]
    assert store.delete(doomed) == len(CONFIG) + 2
    assert store.names() == ["b"]
    assert not store.tree_path(artifact(7)).exists()
    assert store.has_blob(sha(WEIGHTS))
    assert store.used_bytes() == len(WEIGHTS)


def test_partials_are_listed_with_the_pull_they_are_for(store: Store):
    digest = sha(WEIGHTS)
    with store.pinned([digest]):
        store.note_partial(digest, model="llama", manifest=artifact(9))
        store.partial_path(digest).write_bytes(WEIGHTS[:10])
    [item] = store.inventory()
    assert item == CacheItem(
        "partial",
        digest[7:],
        digest,
        10,
        item.last_used,
        model="llama",
        artifact=artifact(9),
    )
    assert store.remove_partial(digest) == 10
    assert store.inventory() == []


def test_touching_a_model_records_when_it_was_last_wanted(store: Store):
    put(store, CONFIG)
    store.place_tree("m", artifact(10), entries(("c", CONFIG)), now=5.0)
    store.touch(["m", "absent"], now=50.0)
    [item] = store.inventory()
    assert item.last_used == 50.0
    state = json.loads(store.state_path.read_text())
    assert state["models"] == {"m": {"lastUsed": 50.0}}


def test_unreadable_bookkeeping_is_started_afresh_from_the_files(store: Store):
    put(store, CONFIG)
    store.place_tree("m", artifact(11), entries(("c", CONFIG)), now=5.0)
    store.state_path.write_text("{not json")
    [item] = store.inventory()
    assert item.last_used == (store.models / "m").lstat().st_mtime
    store.touch(["m"], now=7.0)
    assert json.loads(store.state_path.read_text())["models"] == {"m": {"lastUsed": 7.0}}


def test_a_restart_clears_what_a_stopped_run_left_half_made(tmp_path: Path):
    store = Store(tmp_path)
    put(store, CONFIG)
    half = store.trees / f".tmp-{11:064x}-abcd"
    (half / "sub").mkdir(parents=True)
    (store.models / ".tmp-m-abcd").symlink_to("../trees/x")
    (tmp_path / ".tmp-state-abcd.json").write_text("{}")
    Store(tmp_path)
    assert list(store.trees.iterdir()) == []
    assert list(store.models.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "models", "partial", "trees"]


def test_space_is_reserved_for_pulls_under_way(store: Store):
    files = entries(("a.bin", WEIGHTS))
    with store.reserve(files, limit_bytes=len(WEIGHTS)) as room:
        assert room.left == len(WEIGHTS)
        wanted = entries(("c", CONFIG))
        with (
            pytest.raises(NoSpace) as refused,
            store.reserve(wanted, limit_bytes=len(WEIGHTS), what="model c"),
        ):
            pass
        room.take(len(WEIGHTS))
        with store.reserve(entries(("c", CONFIG)), limit_bytes=len(WEIGHTS) + len(CONFIG)):
            pass
    error = refused.value
    assert (error.needed, error.free, error.limit) == (len(CONFIG), 0, len(WEIGHTS))
    assert (
        str(error) == f"model c: needs 23 B, 0 B free in {store.root} (limit 8.0 KiB): not pulled"
    )


@pytest.mark.parametrize(
    ("count", "text"),
    [(12, "12 B"), (2048, "2.0 KiB"), (800 << 20, "800.0 MiB"), (1288490189, "1.2 GiB")],
)
def test_sizes_read_as_people_read_them(count, text):
    assert human(count) == text
