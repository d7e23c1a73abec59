"""A model directory as a CNCF ModelPack artifact (an OCI image manifest), and back.

One file is one `.raw` layer: weights are incompressible and served as they lie on
disk, so the spec's advice is to package them uncompressed and one file per layer;
a node then fetches, verifies and caches each file on its own, and a new revision
that changes only `config.json` shares every weight layer with the old one.

Deciding is pure: `classify` names a file's media type, `plan` orders the files,
`package` writes the config blob and the manifest (byte for byte the same for the
same files, contents and mtimes: no clock, no map order). Reading and writing are
at the edges: `scan` stats a directory, `push` hashes and uploads, `pull` downloads,
verifies (sha256 while streaming) and renames into place. Files are gigabytes: they
are only ever streamed, never read whole.
"""

from __future__ import annotations

import asyncio
import calendar
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TypeVar

from fleet.errors import FleetError, PermanentError
from fleet.hashing import canonical, sha256_hex
from fleet.oci.client import CHUNK, OCI_MANIFEST, Manifest, Registry
from fleet.oci.reference import Reference, check_digest
from fleet.oci.transfer import (
    bounded,
    hash_slice,
    read_hashed,
    receive,
    retried,
    retrying,
)

JSON = dict[str, Any]
T = TypeVar("T")
log = logging.getLogger("fleet.oci")

WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
DOC = "application/vnd.cncf.model.doc.v1.raw"
CODE = "application/vnd.cncf.model.code.v1.raw"
DATASET = "application/vnd.cncf.model.dataset.v1.raw"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODEL_MANIFEST = "application/vnd.cncf.model.manifest.v1+json"
# Before the CNCF rename the same types were spelled `cnai`; readers accept both.
PREFIXES = ("application/vnd.cncf.model.", "application/vnd.cnai.model.")
MODEL_CONFIGS = tuple(f"{p}config.v1+json" for p in PREFIXES)
MODEL_MANIFESTS = tuple(f"{p}manifest.v1+json" for p in PREFIXES)

FILEPATH = "org.cncf.model.filepath"
FILE_METADATA = "org.cncf.model.file.metadata+json"
UNTESTED = "org.cncf.model.file.mediatype.untested"
TITLE = "org.opencontainers.image.title"
LEGACY_FILEPATH = "org.cnai.model.filepath"
LEGACY_FILE_METADATA = "org.cnai.model.file.metadata+json"

PARALLEL = 4
# How much a worker thread hashes per hop off the event loop (a few chunks: a hop costs
# tens of microseconds, a MiB of sha256 about a millisecond).
HASH_SLICE = 8 * CHUNK
# A file no rule knows is a guess either way; a big one is far likelier weights (an
# ONNX external-data file, a NumPy array) than configuration.
UNKNOWN_WEIGHT_BYTES = 16 << 20

WEIGHT_SUFFIXES = frozenset(
    {
        ".safetensors", ".bin", ".gguf", ".ggml", ".pt", ".pth", ".ckpt", ".onnx",
        ".onnx_data", ".h5", ".hdf5", ".keras", ".msgpack", ".pb", ".tflite", ".mlmodel",
        ".npy", ".npz", ".nemo", ".pdparams", ".params", ".engine",
    }
)  # fmt: skip
CODE_SUFFIXES = frozenset(
    {
        ".py", ".pyi", ".ipynb", ".sh", ".bash", ".js", ".ts", ".go", ".rs", ".c", ".cc",
        ".cpp", ".h", ".hpp", ".cu", ".cuh", ".java", ".lua",
    }
)  # fmt: skip
CODE_NAMES = frozenset({"dockerfile", "makefile", "pyproject.toml", "setup.cfg"})
DOC_SUFFIXES = frozenset({".md", ".rst"})
DOC_PREFIXES = ("readme", "license", "licence", "notice", "copying", "use_policy")
CONFIG_NAMES = frozenset(
    {
        "config.json", "generation_config.json", "special_tokens_map.json",
        "added_tokens.json", "merges.txt", "params.json", "chat_template.jinja",
    }
)  # fmt: skip
CONFIG_PREFIXES = ("tokenizer", "vocab")
# Sentencepiece and tiktoken vocabularies; any `*config.json`; a sharded checkpoint's index.
CONFIG_SUFFIXES = (".model", ".tiktoken", "config.json", ".index.json")
DATASET_SUFFIXES = frozenset({".parquet", ".arrow", ".jsonl", ".csv", ".tsv"})
# The weight format a file suffix says, for the config blob's `config.format`.
FORMATS = {
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".ggml": "ggml",
    ".onnx": "onnx",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".bin": "pytorch",
    ".ckpt": "pytorch",
    ".h5": "keras",
    ".keras": "keras",
    ".msgpack": "flax",
    ".pb": "tensorflow",
    ".tflite": "tflite",
}
PRECISIONS = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float64": "fp64"}

Progress = Callable[[int, int, str], None]  # (bytes done, bytes in all, what is going on)


class ModelError(PermanentError):
    """A directory that cannot be packaged, or an artifact that cannot be unpacked; the
    message names the file or layer."""


class UnsafePath(ModelError):
    """A layer's file path that would write outside the directory pulled into."""

    def __init__(self, path: str, problem: str, where: str = "") -> None:
        super().__init__(f"{where}{': ' if where else ''}file path {path!r} {problem}: refused")
        self.path = path


class LayerCorrupt(ModelError):
    """A layer's bytes are not what its digest and size say; nothing was written for it."""

    def __init__(self, path: str, digest: str, problem: str) -> None:
        super().__init__(f"{path}: layer {digest} {problem}: not written")
        self.path, self.digest = path, digest


# Planning: pure


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What a layer records of one file: its path relative to the model directory (POSIX
    separators) and its stat."""

    path: str
    size: int
    mode: int  # permission bits only
    uid: int
    gid: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    def metadata(self) -> str:
        """The `org.cncf.model.file.metadata+json` value, fields in the spec's order."""
        fields = {
            "name": self.name,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "mtime": format_time(self.mtime_ns),
            "typeflag": 0,  # a regular file, as tar says it
        }
        return json.dumps(fields, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class LayerPlan:
    file: FileInfo
    media_type: str
    untested: bool = False  # the media type is a guess

    @property
    def annotations(self) -> dict[str, str]:
        annotations = {
            FILEPATH: self.file.path,
            FILE_METADATA: self.file.metadata(),
            TITLE: self.file.path,
        }
        if self.untested:
            annotations[UNTESTED] = "true"
        return annotations

    def descriptor(self, digest: str) -> JSON:
        return {
            "mediaType": self.media_type,
            "digest": digest,
            "size": self.file.size,
            "annotations": self.annotations,
        }


def classify(path: str, size: int) -> tuple[str, bool]:
    """The media type of the file at `path` (relative) and whether it is a guess: by name,
    weights first (`tokenizer.bin` is a checkpoint), then code, docs, configuration."""
    name = PurePosixPath(path).name.lower()
    suffix = PurePosixPath(name).suffix
    if suffix in WEIGHT_SUFFIXES or name.endswith(".onnx.data"):
        return WEIGHT, False
    if suffix in CODE_SUFFIXES or name in CODE_NAMES:
        return CODE, False
    if name.startswith("requirements") and suffix in (".txt", ".in"):
        return CODE, False
    if suffix in DOC_SUFFIXES or name.startswith(DOC_PREFIXES):
        return DOC, False
    if name in CONFIG_NAMES or name.startswith(CONFIG_PREFIXES) or name.endswith(CONFIG_SUFFIXES):
        return WEIGHT_CONFIG, False
    if suffix in DATASET_SUFFIXES:
        return DATASET, False
    return (WEIGHT if size >= UNKNOWN_WEIGHT_BYTES else WEIGHT_CONFIG), True


def plan(files: Iterable[FileInfo]) -> list[LayerPlan]:
    """One layer per file, in the order a directory walk meets them (each directory's
    entries sorted by name), so the same files always make the same layers."""
    ordered = sorted(files, key=lambda f: PurePosixPath(f.path).parts)
    seen: set[str] = set()
    layers = []
    for info in ordered:
        check_path(info.path)
        if info.path in seen:
            raise ModelError(f"{info.path}: listed twice")
        seen.add(info.path)
        layers.append(LayerPlan(info, *classify(info.path, info.size)))
    return layers


@dataclass(frozen=True, slots=True)
class Layer:
    plan: LayerPlan
    digest: str

    @property
    def descriptor(self) -> JSON:
        return self.plan.descriptor(self.digest)


@dataclass(frozen=True, slots=True)
class Artifact:
    """A packaged model: its config blob and manifest, as the bytes pushed."""

    layers: tuple[Layer, ...]
    config: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + sha256_hex(self.manifest)

    @property
    def config_digest(self) -> str:
        return "sha256:" + sha256_hex(self.config)

    @property
    def size(self) -> int:
        return sum(layer.plan.file.size for layer in self.layers)


def package(
    layers: Sequence[Layer], *, name: str, version: str = "", hf_config: JSON | None = None
) -> Artifact:
    """The config blob and manifest of `layers`. `createdAt` is the newest file's mtime,
    not the clock (as SOURCE_DATE_EPOCH does for reproducible builds); `hf_config` is the
    model's own `config.json`, if any, for what it says of precision and quantization."""
    if not layers:
        raise ModelError(f"model {name!r} has no files to package")
    descriptor: JSON = {
        "createdAt": format_time(max(layer.plan.file.mtime_ns for layer in layers)),
        "name": name,
    }
    if version:
        descriptor["version"] = version
    config = {
        "descriptor": descriptor,
        "config": model_facts([layer.plan for layer in layers], hf_config),
        # A `.raw` layer is not a tar, so its DiffID is its digest, as modctl writes it.
        "modelfs": {"type": "layers", "diffIds": [layer.digest for layer in layers]},
    }
    config_bytes = canonical(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": MODEL_MANIFEST,
        "config": {
            "mediaType": MODEL_CONFIG,
            "digest": "sha256:" + sha256_hex(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [layer.descriptor for layer in layers],
    }
    return Artifact(tuple(layers), config_bytes, canonical(manifest).encode())


def model_facts(layers: Sequence[LayerPlan], hf_config: JSON | None) -> JSON:
    """The config blob's `config`, as far as the files tell: the weights' format when they
    all have one, precision and quantization from a Hugging Face `config.json`."""
    facts: JSON = {}
    formats = {
        FORMATS.get(PurePosixPath(layer.file.path).suffix.lower(), "")
        for layer in layers
        if layer.media_type == WEIGHT and not layer.untested
    }
    if len(formats) == 1 and "" not in formats:
        facts["format"] = formats.pop()
    hf = hf_config or {}
    dtype = hf.get("torch_dtype") or hf.get("dtype")
    if isinstance(dtype, str) and dtype:
        facts["precision"] = PRECISIONS.get(dtype, dtype)
    quantization = hf.get("quantization_config")
    if isinstance(quantization, dict) and isinstance(quantization.get("quant_method"), str):
        facts["quantization"] = quantization["quant_method"]
    return facts


@dataclass(frozen=True, slots=True)
class Entry:
    """One file a pulled artifact writes: where, which blob, and the mode and mtime to
    give it (None: the metadata annotation does not say)."""

    path: str
    digest: str
    size: int
    mode: int | None = None
    mtime_ns: int | None = None


def unpack_plan(document: JSON, where: str) -> list[Entry]:
    """The files a model manifest holds, refused whole when it is not a model, when a
    layer is not a single file, or when any path would land outside the directory."""
    config = document.get("config") or {}
    kinds = (document.get("artifactType"), config.get("mediaType"))
    if not any(kind in MODEL_MANIFESTS or kind in MODEL_CONFIGS for kind in kinds):
        raise ModelError(
            f"{where} is not a ModelPack model (artifactType {kinds[0]!r}, "
            f"config mediaType {kinds[1]!r})"
        )
    entries, seen = [], set()
    for index, layer in enumerate(document.get("layers") or []):
        if not isinstance(layer, dict):
            raise ModelError(f"{where}: layer {index} is not a descriptor (JSON object)")
        media_type = str(layer.get("mediaType", ""))
        digest = str(layer.get("digest", ""))
        what = f"{where}: layer {index} ({digest})"
        if not media_type.startswith(PREFIXES) or not media_type.endswith(".raw"):
            raise ModelError(
                f"{what} is {media_type}: fleet unpacks only single-file `.raw` model layers"
            )
        check_digest(digest, what)
        annotations = layer.get("annotations") or {}
        path = (
            annotations.get(FILEPATH)
            or annotations.get(LEGACY_FILEPATH)
            or annotations.get(TITLE)
            or ""
        )
        check_path(path, what)
        path = PurePosixPath(path).as_posix()
        if path in seen:
            raise ModelError(f"{what}: file path {path!r} is taken by an earlier layer")
        seen.add(path)
        metadata = annotations.get(FILE_METADATA) or annotations.get(LEGACY_FILE_METADATA)
        mode, mtime_ns = parse_metadata(metadata, what) if metadata else (None, None)
        entries.append(Entry(path, digest, int(layer.get("size", 0)), mode, mtime_ns))
    if not entries:
        raise ModelError(f"{where} has no layers")
    return entries


def check_path(path: str, where: str = "") -> str:
    """`path` when it names a file inside a directory: relative, no `..`, not empty.
    Backslashes count as separators too, for a path written on Windows."""
    if not path:
        raise UnsafePath(path, "is empty", where)
    if "\0" in path:
        raise UnsafePath(path, "holds a NUL byte", where)
    if path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[/\\]", path):
        raise UnsafePath(path, "is absolute", where)
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if ".." in parts:
        raise UnsafePath(path, "climbs out of the directory with '..'", where)
    if not parts:
        raise UnsafePath(path, "names the directory itself", where)
    return path


def parse_metadata(value: str, what: str) -> tuple[int | None, int | None]:
    """Mode (permission bits) and mtime (ns) from a file metadata annotation."""
    try:
        metadata = json.loads(value)
        mode = metadata.get("mode")
        mtime = metadata.get("mtime")
        if mode is not None and not isinstance(mode, int):
            raise ValueError("mode is not an integer")
        mtime_ns = parse_time(mtime) if isinstance(mtime, str) and mtime else None
    except (ValueError, AttributeError) as error:
        raise ModelError(f"{what}: {FILE_METADATA} is not valid: {error}") from None
    # Go's zero time and mode 0 are how a packer says it did not know. Permission bits
    # only: set-uid or sticky bits from a registry are not for us to grant.
    known_mtime = mtime_ns if mtime_ns is not None and mtime_ns > GO_ZERO_TIME_NS else None
    return (mode & 0o777 if mode else None), known_mtime


_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d\d):(\d\d))"
)


def format_time(ns: int) -> str:
    """RFC 3339 in UTC, with as many fraction digits as needed (Go's RFC3339Nano)."""
    seconds, fraction = divmod(ns, 10**9)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time (any offset, up to 9 digits)."""
    match = _TIME.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, _, sign, offset_hours, offset_minutes = match.groups()[6:]
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if sign:
        offset = int(offset_hours) * 3600 + int(offset_minutes) * 60
        seconds -= offset if sign == "+" else -offset
    return seconds * 10**9 + int((fraction or "0").ljust(9, "0"))


GO_ZERO_TIME_NS = parse_time("0001-01-01T00:00:00Z")


# Reading a directory


def scan(directory: Path) -> list[FileInfo]:
    """Every file under `directory`, by path relative to it. Names starting with `.` are
    left out (`.git`, `.cache`, editor droppings: never part of a model); a symlink to a
    file counts as that file (a Hugging Face snapshot is all symlinks into its blob
    store); anything else that is not a regular file or a directory is refused."""
    root = Path(directory)
    if not root.is_dir():
        raise ModelError(f"{root}: not a directory")
    files: list[FileInfo] = []
    pending = [root]
    while pending:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as error:
            raise ModelError(f"{current}: cannot list: {error.strerror}") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            relative = path.relative_to(root).as_posix()
            try:
                relative.encode()
                info = path.stat()
            except UnicodeEncodeError:
                raise ModelError(f"{path}: the file name is not UTF-8") from None
            except OSError as error:
                raise ModelError(f"{path}: {error.strerror}") from None
            if stat.S_ISDIR(info.st_mode):
                if entry.is_symlink():
                    raise ModelError(f"{path}: a symlink to a directory; copy it in instead")
                pending.append(path)
            elif stat.S_ISREG(info.st_mode):
                files.append(
                    FileInfo(
                        relative,
                        info.st_size,
                        stat.S_IMODE(info.st_mode) & 0o777,
                        info.st_uid,
                        info.st_gid,
                        info.st_mtime_ns,
                    )
                )
            else:
                raise ModelError(f"{path}: not a regular file")
    return files


def plan_layers(directory: Path) -> list[LayerPlan]:
    """The layers a model directory makes, in order; see `scan`, `classify` and `plan`."""
    return plan(scan(directory))


def read_hf_config(directory: Path) -> JSON | None:
    """The model's top-level `config.json`, when it is a small JSON object. It only adds
    facts to the config blob: a model whose config.json is something else still packs."""
    path = Path(directory) / "config.json"
    try:
        if path.stat().st_size > CHUNK:
            return None
        loaded = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


# Pushing and pulling


@dataclass(frozen=True, slots=True)
class PushReport:
    reference: str  # where the manifest went, with its digest
    digest: str
    layers: int
    total_bytes: int  # of every layer
    sent_bytes: int
    layers_sent: int
    layers_present: int  # already in the repository: nothing sent

    def to_json(self) -> JSON:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "layers": self.layers,
            "totalBytes": self.total_bytes,
            "sentBytes": self.sent_bytes,
            "layersSent": self.layers_sent,
            "layersPresent": self.layers_present,
        }


@dataclass(frozen=True, slots=True)
class PullReport:
    reference: str
    digest: str
    files: int
    total_bytes: int
    received_bytes: int
    files_written: int
    files_present: int  # already there with the right digest: nothing fetched

    def to_json(self) -> JSON:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "files": self.files,
            "totalBytes": self.total_bytes,
            "receivedBytes": self.received_bytes,
            "filesWritten": self.files_written,
            "filesPresent": self.files_present,
        }


@dataclass(slots=True)
class _Tally:
    """Progress of one phase: bytes done of all, and items finished of all."""

    progress: Progress | None
    verb: str = ""
    noun: str = ""
    total: int = 0
    done: int = 0
    count: int = 0
    finished: int = 0

    def start(self, verb: str, noun: str, count: int, total: int) -> None:
        self.verb, self.noun, self.count, self.total = verb, noun, count, total
        self.done = self.finished = 0
        self.show()

    def add(self, count: int) -> None:
        self.done += count
        self.show()

    def finish(self) -> None:
        self.finished += 1
        self.show()

    def show(self) -> None:
        if self.progress is not None:
            line = f"{self.verb} {self.finished}/{self.count} {self.noun}"
            self.progress(self.done, self.total, line)


async def _hash_file(path: Path, tally: _Tally) -> tuple[str, int]:
    """The sha256 digest and size of the file, streamed through a worker thread."""
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while count := await asyncio.to_thread(hash_slice, handle, hasher, HASH_SLICE):
            size += count
            tally.add(count)
    return "sha256:" + hasher.hexdigest(), size


@dataclass(slots=True)
class _Pusher:
    registry: Registry
    repository: str
    tally: _Tally
    # Upload sessions under way, by digest: a retried upload resumes from the offset the
    # registry holds.
    uploads: dict[str, str] = field(default_factory=dict)
    sent_bytes: int = 0

    async def blob(self, digest: str, source: Path, size: int) -> bool:
        """Upload the file `source` as blob `digest` unless the repository has it; whether
        it was sent."""
        held = await retried(lambda: self.registry.blob_size(self.repository, digest))
        if held is not None:
            self.tally.add(size)
            return False
        async for attempt in retrying():
            with attempt:
                again = attempt.retry_state.attempt_number > 1
                if again and await self.registry.blob_size(self.repository, digest) is not None:
                    return True  # committed, the answer lost
                await self._upload(digest, source, size)
        return True

    async def _upload(self, digest: str, source: Path, size: int) -> None:
        registry, repository = self.registry, self.repository
        location = self.uploads.get(digest)
        held = await registry.resume_upload(repository, location) if location else None
        if held is None:
            location, offset = await registry.start_upload(repository), 0
        else:
            location, offset = held
        self.uploads[digest] = location
        hasher = hashlib.sha256()
        with source.open("rb") as handle:
            # What the registry already holds, hashed from the file (nothing re-sent).
            if offset and await asyncio.to_thread(hash_slice, handle, hasher, offset) != offset:
                raise ModelError(f"{source}: shrank while it was being pushed")
            if offset < size:
                # aiohttp does not pass on what a streamed body raises (the registry only
                # sees a short body): the stream leaves it here instead.
                short: list[ModelError] = []
                chunks = self._chunks(source, handle, hasher, size - offset, short)
                try:
                    location = await registry.append(
                        repository, location, chunks, offset, size - offset
                    )
                except FleetError:
                    if short:
                        self.uploads.pop(digest, None)
                        raise short[0] from None
                    raise
                self.uploads[digest] = location
            if await asyncio.to_thread(handle.read, 1):
                raise ModelError(f"{source}: grew while it was being pushed")
        got = "sha256:" + hasher.hexdigest()
        if got != digest:
            self.uploads.pop(digest, None)
            await registry.cancel_upload(repository, location)
            raise ModelError(f"{source}: changed while it was being pushed ({digest} → {got})")
        await registry.finish_upload(repository, location, digest)
        self.uploads.pop(digest, None)

    async def _chunks(
        self, source: Path, handle: BinaryIO, hasher: Any, length: int, short: list[ModelError]
    ) -> AsyncIterator[bytes]:
        left = length
        while left > 0:
            data = await asyncio.to_thread(read_hashed, handle, hasher, min(CHUNK, left))
            if not data:
                short.append(ModelError(f"{source}: shrank while it was being pushed"))
                raise short[0]
            left -= len(data)
            self.sent_bytes += len(data)
            self.tally.add(len(data))
            yield data


async def push(
    registry: Registry,
    reference: Reference,
    directory: Path,
    progress: Progress | None = None,
    *,
    name: str = "",
    version: str = "",
    parallel: int = PARALLEL,
) -> PushReport:
    """Package `directory` and push it: layers (those the repository lacks), the config,
    then the manifest under the reference's tag (`latest` when it has none), so the tag
    never names an artifact with a blob missing. `name` defaults to the directory's."""
    directory = Path(directory)
    plans = await asyncio.to_thread(plan_layers, directory)
    if not plans:
        raise ModelError(f"{directory}: no files to package")
    tally = _Tally(progress)
    tally.start("hashing", "files", len(plans), sum(p.file.size for p in plans))

    async def hashed(layer: LayerPlan) -> Layer:
        digest, size = await _hash_file(directory / layer.file.path, tally)
        if size != layer.file.size:
            raise ModelError(f"{directory / layer.file.path}: changed size while being hashed")
        tally.finish()
        return Layer(layer, digest)

    layers = await bounded([functools.partial(hashed, p) for p in plans], parallel)
    hf_config = await asyncio.to_thread(read_hf_config, directory)
    artifact = package(
        layers, name=name or directory.resolve().name, version=version, hf_config=hf_config
    )
    if reference.digest and reference.digest != artifact.digest:
        raise ModelError(
            f"{directory} packs to {artifact.digest}, not the {reference.digest} asked for"
        )

    unique = {layer.digest: layer.plan for layer in layers}
    tally.start("uploading", "layers", len(unique), sum(p.file.size for p in unique.values()))
    pusher = _Pusher(registry, reference.repository, tally)

    async def uploaded(digest: str, layer: LayerPlan) -> bool:
        sent = await pusher.blob(digest, directory / layer.file.path, layer.file.size)
        tally.finish()
        return sent

    sent = await bounded([functools.partial(uploaded, *u) for u in unique.items()], parallel)
    repository = reference.repository
    config_digest = artifact.config_digest
    if await retried(lambda: registry.blob_size(repository, config_digest)) is None:
        await retried(lambda: registry.push_blob(repository, config_digest, artifact.config))
    manifest = Manifest(OCI_MANIFEST, artifact.digest, artifact.manifest)
    version_at = reference.tag or ("" if reference.digest else "latest")
    await retried(
        lambda: registry.put_manifest(repository, version_at or manifest.digest, manifest)
    )
    at = Reference(reference.registry, repository, version_at, artifact.digest)
    return PushReport(
        reference=str(at),
        digest=artifact.digest,
        layers=len(layers),
        total_bytes=artifact.size,
        sent_bytes=pusher.sent_bytes,
        layers_sent=sum(sent),
        layers_present=len(sent) - sum(sent),
    )


@dataclass(slots=True)
class _Puller:
    registry: Registry
    repository: str
    root: Path  # resolved
    tally: _Tally
    received_bytes: int = 0

    async def file(self, entry: Entry) -> bool:
        """Write the entry's file unless it is there with the right digest; whether it was
        written."""
        target = self.root.joinpath(*PurePosixPath(entry.path).parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ModelError(f"{target.parent}: cannot create: {error.strerror}") from None
        # A symlink already in the directory must not carry a write outside of it.
        if not target.parent.resolve().is_relative_to(self.root):
            raise UnsafePath(entry.path, f"leads outside {self.root} through a symlink")
        if target.is_dir() and not target.is_symlink():
            raise ModelError(f"{target}: a directory is where layer {entry.digest} goes")
        if await self._present(target, entry):
            await asyncio.to_thread(_settle, target, entry)
            self.tally.add(entry.size)
            return False
        temporary = target.parent / f".{target.name}.{secrets.token_hex(4)}.part"
        try:
            await self._download(entry, temporary)
            await asyncio.to_thread(_settle, temporary, entry)
            temporary.replace(target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return True

    async def _present(self, target: Path, entry: Entry) -> bool:
        if target.is_symlink() or not target.is_file() or target.stat().st_size != entry.size:
            return False
        counted = _Tally(None)  # the bytes count once, as present, not as hashed
        digest, _ = await _hash_file(target, counted)
        return digest == entry.digest

    async def _download(self, entry: Entry, temporary: Path) -> None:
        # The kernel applies the umask to 0o666, as it does for any new file.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        hasher = hashlib.sha256()
        with os.fdopen(descriptor, "wb") as handle:
            async for attempt in retrying():
                with attempt:
                    if handle.tell() < entry.size:
                        await self._receive(entry, handle, hasher)
            received = handle.tell()
        if received != entry.size:
            raise LayerCorrupt(
                entry.path, entry.digest, f"ends after {received} of its {entry.size} bytes"
            )
        got = "sha256:" + hasher.hexdigest()
        if got != entry.digest:
            raise LayerCorrupt(entry.path, entry.digest, f"holds bytes that hash to {got}")

    async def _receive(self, entry: Entry, handle: BinaryIO, hasher: Any) -> None:
        await receive(
            self.registry,
            self.repository,
            entry.digest,
            entry.size,
            handle,
            hasher,
            self._count,
            lambda: LayerCorrupt(
                entry.path, entry.digest, f"holds more than its {entry.size} bytes"
            ),
        )

    def _count(self, count: int) -> None:
        self.received_bytes += count
        self.tally.add(count)


def _settle(path: Path, entry: Entry) -> None:
    """Give the file the mode and mtime its layer's metadata records."""
    if entry.mode is not None:
        path.chmod(entry.mode)
    if entry.mtime_ns is not None:
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))


async def pull(
    registry: Registry,
    reference: Reference,
    directory: Path,
    progress: Progress | None = None,
    *,
    parallel: int = PARALLEL,
) -> PullReport:
    """Write the model at `reference` into `directory` (made if missing), each file to its
    layer's file path, verified while it streams and renamed into place only when its
    digest matches: a failed pull leaves no partial file. Files already there with the
    right digest are not fetched; files the model does not name are left alone."""
    repository = reference.repository
    manifest = await retried(lambda: registry.manifest(repository, reference.version))
    if manifest.is_index:
        raise ModelError(f"{reference} is an index of several artifacts, not a model")
    entries = unpack_plan(manifest.document, str(reference))
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ModelError(f"{directory}: cannot create: {error.strerror}") from None
    tally = _Tally(progress)
    tally.start("pulling", "files", len(entries), sum(e.size for e in entries))
    puller = _Puller(registry, repository, directory.resolve(), tally)

    async def pulled(entry: Entry) -> bool:
        written = await puller.file(entry)
        tally.finish()
        return written

    written = await bounded([functools.partial(pulled, e) for e in entries], parallel)
    return PullReport(
        reference=str(reference.at(manifest.digest)),
        digest=manifest.digest,
        files=len(entries),
        total_bytes=sum(e.size for e in entries),
        received_bytes=puller.received_bytes,
        files_written=sum(written),
        files_present=len(written) - sum(written),
    )
