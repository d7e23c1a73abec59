"""ModelPack packaging: files are classified by name, each layer carries its file's path
and metadata, the same files always make the same bytes, and a pull writes nothing
outside its directory, nothing partial, and nothing that does not match its digest."""

import asyncio
import hashlib
import json
import os
import shutil
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.oci.client import OCI_MANIFEST, Manifest, RegistryUnavailable
from fleet.oci.modelpack import (
    CODE,
    DATASET,
    DOC,
    FILE_METADATA,
    FILEPATH,
    TITLE,
    UNTESTED,
    WEIGHT,
    WEIGHT_CONFIG,
    FileInfo,
    Layer,
    LayerCorrupt,
    ModelError,
    UnsafePath,
    check_path,
    classify,
    format_time,
    package,
    parse_metadata,
    parse_time,
    plan,
    plan_layers,
    pull,
    push,
    scan,
    unpack_plan,
)
from fleet.oci.reference import parse_reference

MiB = 1 << 20
MTIME = parse_time("2025-03-15T14:30:00Z")


def info(path: str, size: int = 10, mode: int = 0o644, mtime_ns: int = MTIME) -> FileInfo:
    return FileInfo(path, size, mode, 1000, 1000, mtime_ns)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fake_digest(path: str) -> str:
    return digest_of(path.encode())


def packed(files, **kwargs):
    layers = [Layer(p, fake_digest(p.file.path)) for p in plan(files)]
    return package(layers, name=kwargs.pop("name", "tiny"), **kwargs)


# Classification


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("model.safetensors", WEIGHT),
        ("model-00001-of-00004.safetensors", WEIGHT),
        ("pytorch_model.bin", WEIGHT),
        ("ggml-model-Q4_K_M.gguf", WEIGHT),
        ("checkpoints/last.ckpt", WEIGHT),
        ("model.pt", WEIGHT),
        ("model.pth", WEIGHT),
        ("onnx/model.onnx", WEIGHT),
        ("onnx/model.onnx_data", WEIGHT),
        ("tf_model.h5", WEIGHT),
        ("flax_model.msgpack", WEIGHT),
        ("config.json", WEIGHT_CONFIG),
        ("generation_config.json", WEIGHT_CONFIG),
        ("preprocessor_config.json", WEIGHT_CONFIG),
        ("tokenizer.json", WEIGHT_CONFIG),
        ("tokenizer_config.json", WEIGHT_CONFIG),
        ("tokenizer.model", WEIGHT_CONFIG),
        ("spiece.model", WEIGHT_CONFIG),
        ("vocab.txt", WEIGHT_CONFIG),
        ("vocab.json", WEIGHT_CONFIG),
        ("merges.txt", WEIGHT_CONFIG),
        ("special_tokens_map.json", WEIGHT_CONFIG),
        ("model.safetensors.index.json", WEIGHT_CONFIG),
        ("README.md", DOC),
        ("readme.txt", DOC),
        ("LICENSE", DOC),
        ("LICENSE.txt", DOC),
        ("docs/usage.md", DOC),
        ("modeling_qwen.py", CODE),
        ("scripts/serve.sh", CODE),
        ("requirements.txt", CODE),
        ("requirements-dev.txt", CODE),
        ("eval/results.parquet", DATASET),
        ("data/train.jsonl", DATASET),
    ],
)
def test_known_files_get_their_media_type_and_are_not_marked_untested(path, media_type):
    assert classify(path, 5 * MiB) == (media_type, False)


def test_a_file_no_rule_knows_is_a_guess_by_size_weights_when_big():
    assert classify("weights/blob.data", 64 * MiB) == (WEIGHT, True)
    assert classify("labels.yaml", 300) == (WEIGHT_CONFIG, True)
    assert classify("notes", 0) == (WEIGHT_CONFIG, True)


def test_weights_win_over_every_other_rule():
    assert classify("tokenizer.bin", 10) == (WEIGHT, False)
    assert classify("README.safetensors", 10) == (WEIGHT, False)


# Layers and their annotations


def test_each_file_is_one_layer_in_the_order_of_a_sorted_walk():
    files = [info("b.txt"), info("a/z.json"), info("a.txt"), info("a/b/c.bin"), info("A.md")]
    assert [p.file.path for p in plan(files)] == [
        "A.md",
        "a/b/c.bin",
        "a/z.json",
        "a.txt",
        "b.txt",
    ]


def test_a_file_listed_twice_is_refused():
    with pytest.raises(ModelError, match="listed twice"):
        plan([info("config.json"), info("config.json")])


def test_a_layer_carries_its_path_title_and_file_metadata_as_the_spec_spells_them():
    layer = plan([info("sub/model.safetensors", size=1024000)])[0]
    assert layer.descriptor("sha256:" + "a" * 64) == {
        "mediaType": WEIGHT,
        "digest": "sha256:" + "a" * 64,
        "size": 1024000,
        "annotations": {
            FILEPATH: "sub/model.safetensors",
            TITLE: "sub/model.safetensors",
            # Go's FileMetadata field order and RFC 3339 time: what modctl writes.
            FILE_METADATA: '{"name":"model.safetensors","mode":420,"uid":1000,"gid":1000,'
            '"size":1024000,"mtime":"2025-03-15T14:30:00Z","typeflag":0}',
        },
    }


def test_only_a_guessed_media_type_is_annotated_untested():
    known, guessed = plan([info("notes.xyz"), info("config.json")])
    assert guessed.annotations[UNTESTED] == "true"
    assert UNTESTED not in known.annotations


# The config blob and the manifest


def test_the_manifest_is_an_oci_image_manifest_of_artifact_type_model_with_the_config_blob():
    artifact = packed([info("model.safetensors", 100), info("config.json", 20)])
    manifest = json.loads(artifact.manifest)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert manifest["config"] == {
        "mediaType": "application/vnd.cncf.model.config.v1+json",
        "digest": digest_of(artifact.config),
        "size": len(artifact.config),
    }
    assert [layer["annotations"][FILEPATH] for layer in manifest["layers"]] == [
        "config.json",
        "model.safetensors",
    ]
    assert artifact.digest == digest_of(artifact.manifest)
    assert artifact.size == 120


def test_the_config_blob_says_what_is_known_and_diff_ids_are_the_raw_layer_digests():
    newest = parse_time("2025-06-01T08:00:00.5Z")
    files = [
        info("model-1.safetensors"),
        info("model-2.safetensors", mtime_ns=newest),
        info("README.md"),
    ]
    hf = {"torch_dtype": "bfloat16", "quantization_config": {"quant_method": "awq"}}
    config = json.loads(packed(files, name="tiny", version="1.2", hf_config=hf).config)
    assert config["descriptor"] == {
        "createdAt": "2025-06-01T08:00:00.5Z",
        "name": "tiny",
        "version": "1.2",
    }
    assert config["config"] == {"format": "safetensors", "precision": "bf16", "quantization": "awq"}
    assert config["modelfs"] == {
        "type": "layers",
        "diffIds": [
            fake_digest(p) for p in ("README.md", "model-1.safetensors", "model-2.safetensors")
        ],
    }


def test_weights_of_two_formats_name_no_format():
    config = json.loads(packed([info("a.safetensors"), info("b.gguf")]).config)
    assert config["config"] == {}
    assert "version" not in config["descriptor"]


def test_nothing_to_package_is_an_error():
    with pytest.raises(ModelError, match="no files"):
        package([], name="empty")


file_infos = st.lists(
    st.builds(
        info,
        st.from_regex(
            r"[a-z]{1,6}(/[a-z]{1,6}){0,2}\.(safetensors|json|md|py|xyz)", fullmatch=True
        ),
        st.integers(0, 1 << 40),
        st.integers(0, 0o777),
        st.integers(0, 2**62),
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda f: f.path,
)


@given(file_infos, st.randoms())
def test_the_same_files_make_the_same_bytes_in_whatever_order_they_are_listed(files, rng):
    shuffled = list(files)
    rng.shuffle(shuffled)
    first, second = packed(files), packed(shuffled)
    assert (first.manifest, first.config) == (second.manifest, second.config)


@given(file_infos, st.data())
def test_any_change_of_a_file_s_metadata_changes_the_manifest(files, data):
    index = data.draw(st.integers(0, len(files) - 1))
    changed = list(files)
    changed[index] = info(
        files[index].path, files[index].size, files[index].mode, files[index].mtime_ns + 1
    )
    assert packed(files).digest != packed(changed).digest


def write_model(root):
    files = {
        "model.safetensors": os.urandom(3000),
        "config.json": b'{"torch_dtype": "float16"}',
        "tokenizer/tokenizer.json": b"{}",
        "README.md": b"# tiny\n",
        "scripts/run.sh": b"#!/bin/sh\n",
        "data/blob.xyz": os.urandom(10),
        "empty.txt": b"",
    }
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        os.utime(target, ns=(MTIME + len(path), MTIME + len(path)))
    (root / "scripts/run.sh").chmod(0o755)
    return files


def test_a_directory_and_its_copy_with_the_same_mtimes_plan_the_same_layers(tmp_path):
    write_model(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # copy2: same mtimes, to the ns
    assert plan_layers(tmp_path / "a") == plan_layers(tmp_path / "b")
    layers = plan_layers(tmp_path / "a")
    assert [p.file.path for p in layers] == [
        "README.md",
        "config.json",
        "data/blob.xyz",
        "empty.txt",
        "model.safetensors",
        "scripts/run.sh",
        "tokenizer/tokenizer.json",
    ]
    run = next(p for p in layers if p.file.path == "scripts/run.sh")
    assert (run.media_type, run.file.mode, run.file.mtime_ns) == (CODE, 0o755, MTIME + 14)


def test_scan_leaves_out_dot_files_follows_file_symlinks_and_refuses_the_rest(tmp_path):
    write_model(tmp_path / "m")
    (tmp_path / "m/.git").mkdir()
    (tmp_path / "m/.git/HEAD").write_text("ref")
    (tmp_path / "m/.gitattributes").write_text("*")
    (tmp_path / "blob").write_bytes(b"weights")
    (tmp_path / "m/linked.safetensors").symlink_to(tmp_path / "blob")
    found = {f.path: f for f in scan(tmp_path / "m")}
    assert ".gitattributes" not in found
    assert not any(path.startswith(".git/") for path in found)
    assert found["linked.safetensors"].size == len(b"weights")

    (tmp_path / "m/more").symlink_to(tmp_path / "m/data")
    with pytest.raises(ModelError, match="symlink to a directory"):
        scan(tmp_path / "m")
    (tmp_path / "m/more").unlink()
    os.mkfifo(tmp_path / "m/pipe")
    with pytest.raises(ModelError, match="not a regular file"):
        scan(tmp_path / "m")


# Times


@given(st.integers(-(10**18), 250 * 10**16))
def test_times_are_rfc3339_utc_and_parse_back_to_the_nanosecond(ns):
    text = format_time(ns)
    assert text.endswith("Z")
    assert parse_time(text) == ns


def test_times_with_an_offset_and_go_s_zero_time():
    assert parse_time("2025-03-15T16:30:00.25+02:00") == MTIME + 250_000_000
    assert parse_metadata('{"mode":420,"mtime":"0001-01-01T00:00:00Z"}', "x") == (0o644, None)
    assert parse_metadata('{"mode":0}', "x") == (None, None)
    with pytest.raises(ModelError, match="not valid"):
        parse_metadata('{"mtime":"yesterday"}', "layer 3")


def test_metadata_grants_no_setuid_or_sticky_bit():
    assert parse_metadata(json.dumps({"mode": 0o4755}), "x") == (0o755, None)


# Unpacking: what a manifest may write


@pytest.mark.parametrize(
    "path",
    [
        "../escape",
        "a/../../escape",
        "/etc/passwd",
        "\\\\server\\share",
        "C:\\evil",
        "..\\up",
        "",
        ".",
    ],
)
def test_paths_that_leave_the_directory_are_refused(path):
    with pytest.raises(UnsafePath):
        check_path(path)


@pytest.mark.parametrize("path", ["a", "a/b/c.bin", "./a", "a/./b", "..hidden", "a..b/c"])
def test_paths_inside_the_directory_are_taken(path):
    assert check_path(path) == path


def manifest_of(*layers, artifact_type="application/vnd.cncf.model.manifest.v1+json"):
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.cncf.model.config.v1+json"},
        "layers": list(layers),
    }


def raw_layer(path, data=b"x", media_type=WEIGHT, key=FILEPATH, metadata=None):
    annotations = {key: path}
    if metadata is not None:
        annotations[FILE_METADATA] = json.dumps(metadata)
    return {
        "mediaType": media_type,
        "digest": digest_of(data),
        "size": len(data),
        "annotations": annotations,
    }


def test_a_manifest_with_an_escaping_path_is_refused_naming_the_layer():
    document = manifest_of(raw_layer("ok.json"), raw_layer("../../.bashrc", b"evil"))
    with pytest.raises(UnsafePath, match=r"layer 1 \(sha256:.*'\.\./\.\./\.bashrc'"):
        unpack_plan(document, "reg.example.com/m:v1")


def test_legacy_cnai_artifacts_unpack_too():
    document = manifest_of(
        raw_layer(
            "model.bin",
            media_type="application/vnd.cnai.model.weight.v1.raw",
            key="org.cnai.model.filepath",
        ),
        artifact_type="application/vnd.cnai.model.manifest.v1+json",
    )
    document["config"]["mediaType"] = "application/vnd.cnai.model.config.v1+json"
    assert [e.path for e in unpack_plan(document, "m")] == ["model.bin"]


def test_what_is_not_a_model_or_not_one_file_per_layer_is_refused():
    image = manifest_of(raw_layer("a"), artifact_type=None)
    image["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json"
    with pytest.raises(ModelError, match="not a ModelPack model"):
        unpack_plan(image, "m")
    tarred = manifest_of(raw_layer("a", media_type="application/vnd.cncf.model.weight.v1.tar"))
    with pytest.raises(ModelError, match=r"only single-file `\.raw`"):
        unpack_plan(tarred, "m")
    twice = manifest_of(raw_layer("a"), raw_layer("./a", b"y"))
    with pytest.raises(ModelError, match="taken by an earlier layer"):
        unpack_plan(twice, "m")


# Pulling, against a registry that serves whatever it is given


class ServedRegistry:
    """What `pull` asks of a Registry: a manifest and blobs, the blobs in small pieces."""

    def __init__(self, document, blobs):
        self.body = json.dumps(document).encode()
        self.blobs = {digest_of(data): data for data in blobs}
        self.reads = 0

    async def manifest(self, repository, version):
        return Manifest(OCI_MANIFEST, digest_of(self.body), self.body)

    async def read_blob(self, repository, digest, start=0, end=None):
        self.reads += 1
        data = self.blobs[digest]
        for offset in range(start, len(data), 7):
            yield data[offset : offset + 7]


REF = parse_reference("reg.example.com/models/tiny:v1")


def run_pull(registry, directory):
    return asyncio.run(pull(registry, REF, directory))


def test_pull_writes_each_file_with_its_mode_and_mtime_and_skips_those_present(tmp_path):
    weights, script = b"w" * 100, b"#!/bin/sh\n"
    document = manifest_of(
        raw_layer(
            "model.safetensors", weights, metadata={"mode": 0o600, "mtime": format_time(MTIME)}
        ),
        raw_layer("bin/run.sh", script, CODE, metadata={"mode": 0o755}),
    )
    registry = ServedRegistry(document, [weights, script])
    report = run_pull(registry, tmp_path / "out")
    assert (tmp_path / "out/model.safetensors").read_bytes() == weights
    assert stat.S_IMODE((tmp_path / "out/model.safetensors").stat().st_mode) == 0o600
    assert (tmp_path / "out/model.safetensors").stat().st_mtime_ns == MTIME
    assert stat.S_IMODE((tmp_path / "out/bin/run.sh").stat().st_mode) == 0o755
    assert (report.files_written, report.files_present, report.received_bytes) == (2, 0, 110)

    again = run_pull(registry, tmp_path / "out")
    assert (again.files_written, again.files_present, again.received_bytes) == (0, 2, 0)
    assert registry.reads == 2


def test_a_blob_that_does_not_match_its_digest_is_not_written_and_leaves_no_partial_file(
    tmp_path,
):
    good = b"g" * 50
    document = manifest_of(raw_layer("model.safetensors", good))
    registry = ServedRegistry(document, [])
    registry.blobs[digest_of(good)] = b"b" * 50
    with pytest.raises(LayerCorrupt, match=rf"model\.safetensors: layer {digest_of(good)}"):
        run_pull(registry, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_blob_longer_than_its_size_is_cut_off(tmp_path):
    good = b"g" * 50
    registry = ServedRegistry(manifest_of(raw_layer("a.bin", good)), [])
    registry.blobs[digest_of(good)] = b"g" * 10_000
    with pytest.raises(LayerCorrupt, match="more than its 50 bytes"):
        run_pull(registry, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_symlink_in_the_directory_does_not_carry_a_write_outside_it(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out/sub").symlink_to(tmp_path / "elsewhere")
    data = b"evil"
    registry = ServedRegistry(manifest_of(raw_layer("sub/x.bin", data)), [data])
    with pytest.raises(UnsafePath, match="through a symlink"):
        run_pull(registry, tmp_path / "out")
    assert list((tmp_path / "elsewhere").iterdir()) == []


# Pushing, against a registry whose connection breaks once in the middle of a blob


class FlakyRegistry:
    """What `push` asks of a Registry, in memory; the first upload of a blob bigger than
    a MiB loses its connection after one MiB, as a registry behind a flaky link would."""

    def __init__(self):
        self.blobs, self.uploads, self.manifests, self.appends = {}, {}, {}, []

    async def blob_size(self, repository, digest):
        return len(self.blobs[digest]) if digest in self.blobs else None

    async def start_upload(self, repository):
        location = f"/upload/{len(self.uploads)}"
        self.uploads[location] = b""
        return location

    async def resume_upload(self, repository, location):
        return location, len(self.uploads[location])

    async def append(self, repository, location, data, start, length):
        assert start == len(self.uploads[location])
        self.appends.append((start, length))
        async for chunk in data:
            self.uploads[location] += chunk
            if len(self.appends) == 1 and length > MiB:
                raise RegistryUnavailable("connection reset")
        return location

    async def finish_upload(self, repository, location, digest):
        assert digest_of(self.uploads[location]) == digest
        self.blobs[digest] = self.uploads.pop(location)

    async def cancel_upload(self, repository, location):
        del self.uploads[location]

    async def push_blob(self, repository, digest, data):
        self.blobs[digest] = data

    async def put_manifest(self, repository, version, manifest):
        self.manifests[version] = manifest


def test_an_upload_cut_off_resumes_from_what_the_registry_holds_and_sends_only_the_rest(
    tmp_path,
):
    weights = os.urandom(3 * MiB + 5)
    (tmp_path / "m").mkdir()
    (tmp_path / "m/model.safetensors").write_bytes(weights)
    registry = FlakyRegistry()
    report = asyncio.run(push(registry, REF, tmp_path / "m", parallel=1))
    assert registry.appends == [(0, len(weights)), (MiB, len(weights) - MiB)]
    assert registry.blobs[digest_of(weights)] == weights
    assert registry.manifests["v1"].digest == report.digest
    # Sent once in all: the first MiB, then the rest.
    assert (report.layers_sent, report.sent_bytes) == (1, len(weights))

    again = asyncio.run(push(registry, REF, tmp_path / "m", parallel=1))
    assert (again.digest, again.layers_present, again.sent_bytes) == (report.digest, 1, 0)
