#!/usr/bin/env python3
"""Pull one model from a real registry onto a node: the cache agent side by side with oras.

Usage:
    python3 hack/bench/agent_pull.py --json /tmp/agent-pull.json
        [--size-mib 2048] [--shards 8] [--runs 3] [--parallel 4]
        [--tools agent,oras,model-pull] [--work-dir DIR] [--keep]

Starts one CNCF Distribution registry of the e2e tests' own kind (tests/e2e/registries.py:
the local fleet's build, TLS signed by a CA of its own, its Prometheus metrics on a debug
port, as hack/bench/replicate.py starts them) and pushes a generated model to it with
fleet's own `fleet.oci.modelpack.push`: `--shards` files of random bytes,
model-0000N-of-0000M.safetensors, `--size-mib` MiB in all (default 8 x 256 MiB), and a
small config.json. A second version, v2, differs in its last shard only.

The tools, each a process of its own started the same way, pulling v1 by digest:
- agent: the node cache agent's pull, `fleet.agent.fetch.fetch` into a
  `fleet.agent.store.Store` (a small `python -c` script; `--parallel`, default 4). It
  fsyncs each blob before committing it, as a node must; the others do not.
- oras: `oras pull --concurrency <--parallel>` (the local fleet's build), into a directory.
- model-pull: `fleet model pull` (`fleet.oci.modelpack.pull`, 4 at a time, fixed).

Cold: each tool pulls into an empty directory, `--runs` times (the tools take turns, the
order rotated each round; `sync` before every run; the directory dropped after each run),
the median kept. Figures: wall seconds of the process; MB/s = the files' bytes (10^6) /
seconds; CPU seconds = user+sys of the process (getrusage of the children); on disk = the
blocks of the files under the directory afterwards, each inode once (the agent's tree is
hard links of its blobs); served = what the registry says it sent (the sum of
`registry_http_response_size_bytes`). Every pull is checked to have written the model's
files at their sizes (each tool verifies digests itself).

Then the agent alone, into the store of its last cold run:
- warm: v1 again (the tree is there: nothing is asked of the registry);
- one shard changed: v2 under the same model name; unchanged files are hard links of the
  blobs already there, so what it receives and what it adds on disk should both be one
  shard;
- resume, into a fresh store: a fetch killed (SIGKILL) once half the bytes are in
  `partial/` + `blobs/`, then run again; what the second run receives against the whole.

Progress goes to stderr; the tables and the command line to stdout; `--json FILE` saves
every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shlex
import shutil
import signal
import ssl
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from replicate import (
    LocalRegistry,
    first_line,
    human,
    process_cpu,
    rotated,
    running_registries,
    scrape,
    session,
    start_registry,
)
from runs import command_line, report_head, tool_list
from scale import log
from tables import aligned

from fleet.devenv.toolchain import built_binary
from fleet.oci import modelpack
from fleet.oci.client import Registry
from fleet.oci.reference import parse_reference

JSON = dict[str, Any]
MiB = 1 << 20
REPOSITORY = "bench/model"
MODEL = "bench"  # the model's name in the agent's store (models/bench)
TOOLS = ("agent", "oras", "model-pull")
WRITE_CHUNK = 8 * MiB
RESUME_AT = 0.5  # the share of the bytes on disk when the first fetch is killed
POLL_SECONDS = 0.002  # a small model is in within a second: look often
CONFIG_JSON = {  # enough of a Hugging Face config for `push` to read precision from
    "architectures": ["BenchForCausalLM"],
    "model_type": "bench",
    "torch_dtype": "bfloat16",
}

FLEET_MAIN = "from fleet.cli.main import main; main()"
# The agent's pull, as the node agent makes its session and client (fleet/agent/node.py);
# the report on stdout. A script of its own so that its CPU is measured as oras's is.
FETCH_SCRIPT = """
import asyncio, json, ssl, sys
from pathlib import Path

import aiohttp

from fleet.agent.fetch import fetch
from fleet.agent.store import Store
from fleet.oci.client import Registry


async def main(host, ca, repository, digest, root, name, parallel):
    tls = ssl.create_default_context(cafile=ca)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        report = await fetch(
            Registry(session, host, tls=tls),
            repository,
            digest,
            Store(Path(root)),
            name=name,
            parallel=int(parallel),
            limit_bytes=None,
        )
    print(json.dumps(report.to_json()))


asyncio.run(main(*sys.argv[1:]))
"""


# --- Figures ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """One pull and what it cost."""

    tool: str
    phase: str  # cold, warm, one-shard, killed, resumed
    reference: str
    into: str
    seconds: float | None = None
    cpu_seconds: float | None = None
    disk_bytes: int | None = None  # blocks of the files under `into`, each inode once
    apparent_bytes: int | None = None  # their sizes, each inode once
    files: int | None = None  # inodes
    served_bytes: int | None = None  # the registry's response sizes, summed
    registry_requests: int | None = None
    registry_cpu_seconds: float | None = None
    report: JSON | None = None  # the agent's FetchReport, fleet model pull's -o json
    error: str = ""
    output: str = ""

    @property
    def received(self) -> int | None:
        """What the tool says it received, if it says."""
        if self.report is None or "receivedBytes" not in self.report:
            return None
        return int(self.report["receivedBytes"])


@dataclass(slots=True)
class Tool:
    name: str
    label: str
    command: list[str] = field(default_factory=list)  # without the reference and directory
    version: str = ""
    unavailable: str = ""
    cold: list[Run] = field(default_factory=list)

    @property
    def done(self) -> list[Run]:
        return [r for r in self.cold if not r.error and r.seconds is not None]

    def median(self, what: str) -> float | None:
        values = [getattr(r, what) for r in self.done if getattr(r, what) is not None]
        return statistics.median(values) if values else None


@dataclass(slots=True)
class Extras:
    """The agent alone, into stores it has filled."""

    warm: Run | None = None
    warm_disk_added: int | None = None
    one_shard: Run | None = None
    one_shard_disk_added: int | None = None
    killed: Run | None = None
    killed_at_bytes: int | None = None  # in partial/ + blobs/ when the kill was sent
    resumed: Run | None = None


@dataclass(frozen=True, slots=True)
class Setup:
    registry: LocalRegistry
    metrics: int  # the port of its debug server (/metrics)
    ca: Path
    work: Path
    v1: str  # host/repository@digest
    v2: str
    files: dict[str, int]  # v1's files: path → size
    total_bytes: int  # of v1's files
    shard_bytes: int
    parallel: int
    timeout: float


def disk_usage(root: Path) -> tuple[int, int, int]:
    """(blocks in bytes, sizes, files) of the regular files under `root`, each inode once:
    hard links of one blob count once, as they take room once."""
    seen: dict[tuple[int, int], tuple[int, int]] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            info = os.lstat(os.path.join(directory, name))  # noqa: PTH118 - os.walk's strings
            if stat.S_ISREG(info.st_mode):
                seen[(info.st_dev, info.st_ino)] = (info.st_blocks * 512, info.st_size)
    return sum(b for b, _ in seen.values()), sum(s for _, s in seen.values()), len(seen)


def files_of(root: Path) -> dict[str, int]:
    """Every regular file under `root` (symlinks followed, as a pod sees them): path → size."""
    found = {}
    for directory, _, names in os.walk(root, followlinks=True):
        for name in names:
            path = Path(directory) / name
            if path.is_file():
                found[path.relative_to(root).as_posix()] = path.stat().st_size
    return found


@contextmanager
def measured(setup: Setup, run: Run) -> Iterator[None]:
    """Fill in what the registry served and spent while the block ran."""
    cpu, before = process_cpu(setup.registry), scrape(setup.metrics)
    yield
    after = scrape(setup.metrics)
    run.registry_cpu_seconds = round(process_cpu(setup.registry) - cpu, 2)
    run.served_bytes = int(after["served"] - before["served"])
    run.registry_requests = int(after["requests"] - before["requests"])


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


# --- The tools ----------------------------------------------------------------------------------


def tools_here(names: list[str], ca: Path, parallel: int) -> list[Tool]:
    tools = []
    for name in names:
        if name == "agent":
            tool = Tool(name, f"fleet agent fetch (parallel {parallel})")
            tool.command = [sys.executable, "-c", FETCH_SCRIPT]
        elif name == "oras":
            tool = Tool(name, f"oras pull --concurrency {parallel}")
            oras = built_binary("oras")
            if not oras.exists():
                tool.unavailable = f"{oras} is not built (fleet dev up builds it)"
            else:
                tool.command = [str(oras), "pull", "--no-tty", "--ca-file", str(ca)]
                tool.command += ["--concurrency", str(parallel)]
                tool.version = " ".join(first_line([str(oras), "version"]).split())
        else:
            tool = Tool(name, f"fleet model pull (parallel {modelpack.PARALLEL})")
            # The console script when this Python has one: literally `fleet model pull`.
            script = Path(sys.executable).with_name("fleet")
            fleet = [str(script)] if script.exists() else [sys.executable, "-c", FLEET_MAIN]
            tool.command = [*fleet, "model", "pull", "--ca-file", str(ca), "-o", "json"]
        tools.append(tool)
    return tools


def arguments(tool: str, setup: Setup, reference: str, into: Path) -> list[str]:
    """What follows the tool's command to pull `reference` into `into`."""
    if tool == "agent":
        ref = parse_reference(reference)
        host, repository, digest = ref.registry, ref.repository, ref.digest
        return [host, str(setup.ca), repository, digest, str(into), MODEL, str(setup.parallel)]
    if tool == "oras":
        return [reference, "--output", str(into)]
    return [reference, str(into)]


def pulled_tree(tool: str, into: Path) -> Path:
    """Where the tool's pull puts the model's files."""
    return into / "models" / MODEL if tool == "agent" else into


def pull(tool: Tool, setup: Setup, phase: str, reference: str, into: Path) -> Run:
    """Run the tool once, timed, its CPU from getrusage; what it left under `into`."""
    run = Run(tool.name, phase, reference, str(into))
    command = [*tool.command, *arguments(tool.name, setup, reference, into)]
    os.sync()  # what the last run left to write does not land in this one
    with measured(setup, run):
        cpu, started = children_cpu(), time.perf_counter()
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=setup.timeout, check=False
            )
        except subprocess.TimeoutExpired:
            run.error = f"timed out after {setup.timeout:.0f} s"
            return run
        finally:
            run.seconds = time.perf_counter() - started
            run.cpu_seconds = children_cpu() - cpu
    run.output = (done.stdout + done.stderr).strip()[-4000:]
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        run.error = f"exit {done.returncode}: " + (lines[-1] if lines else "(nothing on stderr)")
        return run
    if tool.name != "oras":
        try:
            run.report = json.loads(done.stdout)
        except ValueError:
            run.error = f"no JSON report on stdout: {done.stdout.strip()[-200:]!r}"
            return run
    os.sync()  # blocks the file system has yet to allocate count too
    run.disk_bytes, run.apparent_bytes, run.files = disk_usage(into)
    return run


def check(run: Run, into: Path, wanted: dict[str, int]) -> None:
    """The run fails when the model's files are not all there at their sizes."""
    if run.error:
        return
    got = files_of(pulled_tree(run.tool, into))
    missing = sorted(set(wanted) - set(got))
    wrong = sorted(p for p in wanted if p in got and got[p] != wanted[p])
    extra = sorted(set(got) - set(wanted))
    if missing or wrong or extra:
        run.error = f"files differ: missing {missing}, wrong size {wrong}, not the model's {extra}"


def describe(run: Run, total: int) -> str:
    if run.error:
        return f"FAILED after {run.seconds or 0:.1f} s: {run.error}"
    text = f"{run.seconds:.2f} s, CPU {run.cpu_seconds:.2f} s"
    if run.phase == "cold":
        text += f", {total / 1e6 / run.seconds:.0f} MB/s"
    if run.received is not None:
        text += f", received {human(run.received)}"
    text += f", registry served {human(run.served_bytes)} in {run.registry_requests} requests"
    if run.disk_bytes is not None:
        text += f", on disk {human(run.disk_bytes)}"
    return text


# --- The model ----------------------------------------------------------------------------------


def write_random(path: Path, size: int, seed: int) -> None:
    generator = random.Random(seed)  # noqa: S311 - filler bytes, not secrets
    with path.open("wb") as handle:
        left = size
        while left:
            count = min(WRITE_CHUNK, left)
            handle.write(generator.randbytes(count))
            left -= count


def shard_name(index: int, shards: int) -> str:
    return f"model-{index:05d}-of-{shards:05d}.safetensors"


def make_models(work: Path, shards: int, shard_bytes: int) -> tuple[Path, Path]:
    """v1 and v2: the same files (hard links) but for v2's last shard."""
    v1, v2 = work / "model-v1", work / "model-v2"
    for directory in (v1, v2):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    (v1 / "config.json").write_text(json.dumps(CONFIG_JSON, indent=2) + "\n")
    for index in range(1, shards + 1):
        write_random(v1 / shard_name(index, shards), shard_bytes, seed=index)
    for path in v1.iterdir():
        if path.name != shard_name(shards, shards):
            (v2 / path.name).hardlink_to(path)
    write_random(v2 / shard_name(shards, shards), shard_bytes, seed=1000 + shards)
    return v1, v2


async def push_model(registry: LocalRegistry, directory: Path, tag: str) -> modelpack.PushReport:
    tls = ssl.create_default_context(cafile=str(registry.ca))
    async with session() as client:
        return await modelpack.push(
            Registry(client, registry.host, tls=tls),
            parse_reference(f"{registry.host}/{REPOSITORY}:{tag}"),
            directory,
            name="bench-model",
            version=tag,
        )


# --- The agent alone ----------------------------------------------------------------------------


def in_store(root: Path) -> int:
    """Bytes in the store's partial files and blobs: what a fetch has received so far."""
    count = 0
    for directory in (root / "partial", root / "blobs" / "sha256"):
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                count += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:  # committed meanwhile: counted in blobs/ next time
                continue
    return count


def killed_fetch(agent: Tool, setup: Setup, root: Path) -> tuple[Run, int | None]:
    """Start the agent's fetch of v1 into `root`, SIGKILL it once RESUME_AT of the bytes are
    in; the run and the bytes in the store when the kill was sent (None: it finished first)."""
    run = Run(agent.name, "killed", setup.v1, str(root))
    command = [*agent.command, *arguments(agent.name, setup, setup.v1, root)]
    threshold = RESUME_AT * setup.total_bytes
    at: int | None = None
    os.sync()
    with measured(setup, run):
        cpu, started = children_cpu(), time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + setup.timeout
            while process.poll() is None and time.monotonic() < deadline:
                held = in_store(root)
                if held >= threshold:
                    process.send_signal(signal.SIGKILL)
                    at = held
                    break
                time.sleep(POLL_SECONDS)
        finally:
            if process.poll() is None and at is None:
                process.kill()  # timed out, or this script was interrupted
            stdout, stderr = process.communicate()
            run.seconds = time.perf_counter() - started
            run.cpu_seconds = children_cpu() - cpu
    run.output = (stdout + stderr).decode(errors="replace").strip()[-4000:]
    if at is None:
        run.error = (
            f"the fetch ended (exit {process.returncode}) before {RESUME_AT:.0%} of the bytes "
            "were in: the model is too small to catch it"
        )
    os.sync()
    run.disk_bytes, run.apparent_bytes, run.files = disk_usage(root)
    return run, at


def agent_alone(agent: Tool, setup: Setup, store: Path) -> Extras:
    extras = Extras()
    log("agent: warm, v1 again into the store of its last cold run")
    before = disk_usage(store)[0]
    extras.warm = pull(agent, setup, "warm", setup.v1, store)
    check(extras.warm, store, setup.files)
    if extras.warm.disk_bytes is not None:
        extras.warm_disk_added = extras.warm.disk_bytes - before
    log(f"  {'warm':<10} {describe(extras.warm, setup.total_bytes)}")

    log("agent: one shard changed, v2 into the same store under the same name")
    before = disk_usage(store)[0]
    extras.one_shard = pull(agent, setup, "one-shard", setup.v2, store)
    # v2's files: v1's paths and sizes, only the last shard's bytes differ.
    check(extras.one_shard, store, setup.files)
    if extras.one_shard.disk_bytes is not None:
        extras.one_shard_disk_added = extras.one_shard.disk_bytes - before
    log(f"  {'one-shard':<10} {describe(extras.one_shard, setup.total_bytes)}")

    root = setup.work / "pulls" / "agent-resume"
    shutil.rmtree(root, ignore_errors=True)
    log(f"agent: resume, v1 into a fresh store, killed at {RESUME_AT:.0%}, then again")
    try:
        extras.killed, extras.killed_at_bytes = killed_fetch(agent, setup, root)
        log(f"  {'killed':<10} {describe(extras.killed, setup.total_bytes)}")
        extras.resumed = pull(agent, setup, "resumed", setup.v1, root)
        check(extras.resumed, root, setup.files)
        log(f"  {'resumed':<10} {describe(extras.resumed, setup.total_bytes)}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return extras


# --- The benchmark ------------------------------------------------------------------------------


def bench(options: argparse.Namespace, work: Path, report: JSON) -> tuple[list[Tool], Extras]:
    shard_bytes = options.size_mib * MiB // options.shards
    began = time.perf_counter()
    v1_dir, v2_dir = make_models(work, options.shards, shard_bytes)
    log(
        f"generated {options.shards} shards x {human(shard_bytes)} in {work} "
        f"in {time.perf_counter() - began:.1f} s"
    )
    pulls = work / "pulls"
    pulls.mkdir(exist_ok=True)
    extras = Extras()
    with running_registries(work / "registries") as registries:
        registry, metrics = start_registry(registries, "registry")
        log(f"registry: {registry.host} (data under {registry.root})")
        began = time.perf_counter()
        v1 = asyncio.run(push_model(registry, v1_dir, "v1"))
        v2 = asyncio.run(push_model(registry, v2_dir, "v2"))
        log(f"pushed v1 {v1.digest} and v2 {v2.digest} in {time.perf_counter() - began:.1f} s")
        files = files_of(v1_dir)
        setup = Setup(
            registry,
            metrics,
            registries.ca_path,
            work,
            f"{registry.host}/{REPOSITORY}@{v1.digest}",
            f"{registry.host}/{REPOSITORY}@{v2.digest}",
            files,
            sum(files.values()),
            shard_bytes,
            options.parallel,
            options.timeout,
        )
        report["artifact"] = {
            "v1": v1.digest,
            "v2": v2.digest,
            "files": len(files),
            "bytes": setup.total_bytes,
            "shards": options.shards,
            "shard_bytes": shard_bytes,
            "pushed": {"v1": v1.to_json(), "v2": v2.to_json()},
        }
        report["registry"] = first_line([str(built_binary("registry")), "--version"])
        tools = tools_here(options.tools, registries.ca_path, options.parallel)
        runnable = [t for t in tools if not t.unavailable]
        for tool in tools:
            if tool.unavailable:
                log(f"{tool.label}: not available: {tool.unavailable}")
        kept = pulls / "agent-store"  # the agent's last cold store, for the runs after
        for turn in range(options.runs):
            log(f"cold pulls, round {turn + 1} of {options.runs}")
            for tool in rotated(runnable, turn):
                into = pulls / f"{tool.name}-{turn + 1}"
                run = pull(tool, setup, "cold", setup.v1, into)
                check(run, into, files)
                tool.cold.append(run)
                log(f"  {tool.label:<30} {describe(run, setup.total_bytes)}")
                if tool.name == "agent" and turn == options.runs - 1 and not run.error:
                    into.rename(kept)
                else:
                    shutil.rmtree(into, ignore_errors=True)
        agent = next((t for t in runnable if t.name == "agent"), None)
        if agent is not None and kept.exists():
            try:
                extras = agent_alone(agent, setup, kept)
            finally:
                shutil.rmtree(kept, ignore_errors=True)
    return tools, extras


# --- Output -------------------------------------------------------------------------------------


COLUMNS = ("TOOL", "COLD s", "MB/s", "CPU s", "vs oras", "ON DISK", "SERVED")
EXTRA_COLUMNS = ("AGENT, SAME STORE", "s", "RECEIVED", "SERVED", "DISK ADDED", "EXPECTED")


def row(tool: Tool, oras: float | None, total: int) -> list[str]:
    if tool.unavailable:
        return [tool.label, "not available", *["-"] * (len(COLUMNS) - 2)]
    cold = tool.median("seconds")
    if cold is None:
        return [tool.label, "failed", *["-"] * (len(COLUMNS) - 2)]
    return [
        tool.label,
        f"{cold:.2f}",
        f"{total / 1e6 / cold:.0f}",
        f"{tool.median('cpu_seconds'):.2f}",
        f"{oras / cold:.2f}x" if oras else "-",
        human(tool.median("disk_bytes")),
        human(tool.median("served_bytes")),
    ]


def share(part: int | None, whole: int) -> str:
    return "-" if part is None else f"{human(part)} ({part / whole:.0%})"


def extra_rows(extras: Extras, setup: JSON) -> list[list[str]]:
    total, shard = setup["bytes"], setup["shard_bytes"]
    rows = []

    def cells(run: Run | None, added: int | None) -> list[str]:
        if run is None:
            return ["-"] * 4
        if run.error:
            return ["failed", "-", "-", "-"]
        seconds = f"{run.seconds:.2f}"
        if run.report is not None:
            seconds += f" ({run.report['seconds']:.2f})"
        return [seconds, human(run.received), human(run.served_bytes), human(added)]

    rows.append(["warm: v1 again", *cells(extras.warm, extras.warm_disk_added), "0 B, 0 B"])
    rows.append(
        [
            "v2: one shard changed",
            *cells(extras.one_shard, extras.one_shard_disk_added),
            f"≈{human(shard)}, ≈{human(shard)}",
        ]
    )
    killed, resumed = extras.killed, extras.resumed
    if killed is not None and killed.error:
        rows.append(["resume: killed, run again", "not measured", "-", "-", "-", "-"])
    elif resumed is not None and extras.killed_at_bytes is not None:
        at = extras.killed_at_bytes
        seconds, _, served, _ = cells(resumed, None)
        received = "-" if resumed.error else share(resumed.received, total)
        rows.append(
            [
                f"resume: killed at {at / total:.0%}, run again",
                seconds,
                received,
                served,
                "-",
                f"≈{human(total - at)} ({1 - at / total:.0%})",
            ]
        )
    return rows


def print_tables(tools: list[Tool], extras: Extras, header: str, artifact: JSON) -> None:
    total = artifact["bytes"]
    print(header)
    named = {t.name: t for t in tools}
    oras = named["oras"].median("seconds") if "oras" in named else None
    for line in aligned([list(COLUMNS), *(row(t, oras, total) for t in tools)], " | "):
        print(line)
    print()
    print("  COLD s: median wall seconds of the cold pulls, each into an empty directory; MB/s:")
    print("    the files' bytes / COLD s; CPU s: median user+sys of the tool's process.")
    print("  vs oras: oras pull's COLD s / this row's (above 1: faster). ON DISK: the blocks of")
    print("    the files left, each inode once. SERVED: the registry's response bytes.")
    for tool in tools:
        lines = details(tool)
        if lines:
            print(f"  {tool.label}:")
            for line in lines:
                print(f"    {line}")
    if extras.warm is None:
        return
    print()
    rows = [list(EXTRA_COLUMNS), *extra_rows(extras, artifact)]
    for line in aligned(rows, " | "):
        print(line)
    print()
    print("  s: wall seconds of the process (the fetch's own, from its report). RECEIVED: the")
    print("    fetch's report. DISK ADDED: the store's blocks after less before, each inode once.")
    print("  EXPECTED: received, disk added (resume: what the killed fetch had yet to get).")
    for run in (extras.warm, extras.one_shard, extras.killed, extras.resumed):
        if run is None:
            continue
        if run.error:
            print(f"  {run.phase}: failed: {run.error}")
        elif run.report is not None:
            print(f"  {run.phase}: {fetch_report(run.report)}")
    if extras.killed is not None and not extras.killed.error:
        print(
            f"  killed: after {extras.killed.seconds:.2f} s with "
            f"{human(extras.killed_at_bytes)} in partial/ + blobs/ (the registry had sent "
            f"{human(extras.killed.served_bytes)}: in flight or unwritten when killed)"
        )


def fetch_report(report: JSON) -> str:
    return (
        f"received {human(report['receivedBytes'])}, resumed {human(report['resumedBytes'])}, "
        f"blobs fetched {report['blobsFetched']}, present {report['blobsPresent']}"
    )


def details(tool: Tool) -> list[str]:
    if tool.unavailable:
        return [f"not available: {tool.unavailable}"]
    lines = []
    if tool.name == "agent":
        lines.append(f"$ {shlex.quote(sys.executable)} -c FETCH_SCRIPT HOST CA REPO DIGEST STORE")
    else:
        shown = f"$ {shlex.join(tool.command)} REF DIR"
        lines.append(shown + (f"  ({tool.version})" if tool.version else ""))
    if tool.cold:
        times = ", ".join("failed" if r.error else f"{r.seconds:.2f}" for r in tool.cold)
        lines.append(f"cold pulls: {times} s")
    if tool.done:
        cpu = statistics.median(r.registry_cpu_seconds or 0.0 for r in tool.done)
        requests = statistics.median(r.registry_requests or 0 for r in tool.done)
        lines.append(f"per cold pull: the registry's CPU {cpu:.1f} s, {requests:.0f} requests")
    lines += [f"failed: {error}" for error in sorted({r.error for r in tool.cold if r.error})]
    return lines


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hack/bench/agent_pull.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
    )
    parser.add_argument("--size-mib", type=int, default=2048, help="the shards' MiB in all (2048)")
    parser.add_argument("--shards", type=int, default=8, help="weight files (8)")
    parser.add_argument("--runs", type=int, default=3, help="cold pulls per tool, median kept (3)")
    parser.add_argument(
        "--parallel", type=int, default=4, help="the agent's parallel, oras's --concurrency (4)"
    )
    parser.add_argument(
        "--tools",
        type=tool_list(TOOLS),
        default=list(TOOLS),
        metavar="LIST",
        help=f"which rows, comma-separated ({','.join(TOOLS)}); the agent's runs need agent",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the model, the registry's data, the pulls (default: a new temporary directory)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (removed by default)"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, metavar="S", help="bound on one pull (1800)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="save the figures")
    options = parser.parse_args(argv)
    if min(options.size_mib, options.shards, options.runs, options.parallel) < 1:
        parser.error("--size-mib, --shards, --runs and --parallel must be positive")
    if options.size_mib * MiB // options.shards < 1:
        parser.error("--size-mib is too small for that many shards")
    return options


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    command = command_line("hack/bench/agent_pull.py", argv)
    made = options.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-agent-pull-")) if made else options.work_dir
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    report: JSON = report_head(command, work_dir=str(work))
    try:
        tools, extras = bench(options, work, report)
    except KeyboardInterrupt:
        log("interrupted: the registry is stopped")
        return 130
    finally:
        if options.keep:
            log(f"work directory kept: {work}")
        else:
            for part in ("registries", "pulls", "model-v1", "model-v2"):
                shutil.rmtree(work / part, ignore_errors=True)
            if made:
                shutil.rmtree(work, ignore_errors=True)
    artifact = report["artifact"]
    header = (
        f"Model pull onto a node from one registry over TLS on 127.0.0.1: {options.shards} shards "
        f"x {human(artifact['shard_bytes'])} + config.json ({human(artifact['bytes'])}), "
        f"{os.cpu_count()} CPUs, {report['registry']}, {report['revision']}"
    )
    print_tables(tools, extras, header, artifact)
    wall = time.monotonic() - began
    print(f"  wall time of the whole run: {wall:.0f} s")
    print()
    print(f"$ {command}")
    report.update(wall_seconds=round(wall, 1), tools=[asdict(t) for t in tools])
    report["agent_same_store"] = asdict(extras)
    if options.json:
        options.json.write_text(json.dumps(report, indent=2))
        log(f"figures saved to {options.json}")
    return 0


if __name__ == "__main__":
    # Started in the background, SIGINT may arrive ignored: Ctrl-C (kill -INT) and kill -TERM
    # must still stop the registry.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
