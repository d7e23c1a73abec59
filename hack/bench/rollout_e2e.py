#!/usr/bin/env python3
"""Time progressive rollouts end to end on the real local fleet: from a change to Complete.

Usage:
    python3 hack/bench/rollout_e2e.py [--clusters 12] [--datacenters 3]
        [--state-dir /tmp/fleet-bench-rollout] [--rollout none|JSON ...] [--keep] [--json FILE]

Runs one `fleet controller` against a local fleet (reused when one runs from
--state-dir, else started there and stopped at the end unless --keep) and, for
each rollout setting in turn, in the fleet's own Cluster namespace
(fleet-clusters): installs Addon `bench` (a Namespace and a ConfigMap) at version
1 through AddonProfile `bench` with that `spec.rollout`, waits until every
cluster is Ready on it, then changes the ConfigMap to version 2 and times the
change from that write until every cluster is Ready on the new revision and the
profile's `status.rollout` says Complete. Waves are read from `status.rollout.waves`
(started→completed, the controller's own microsecond timestamps); when each
cluster moved from its AddonDeployment's moved-at annotation, when it became Ready
from this script's polling (every --poll seconds). Then the profile is deleted
and the controller's clean-up waited for before the next setting.

The default settings: all at once (no spec.rollout); canary 1, maxUnavailable 25%;
the same by datacenter; canary 1, maxUnavailable 1, by datacenter.

Progress goes to stderr; the table and the command line (for the README) to
stdout; `--json FILE` saves every figure, per wave and per cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import urllib3
from scale import (
    CAPI_API,
    FLEET_API,
    SYSTEM_NAMESPACE,
    Controller,
    Plane,
    bring_down,
    bring_up,
    git_revision,
    log,
    no_other_leader,
    planes_of,
    running_fleet,
    wait_for_api,
)
from tables import aligned

from fleet.api import (
    API_VERSION,
    LABEL_CANARY,
    LABEL_DATACENTER,
    LABEL_PROFILE,
    MOVED_AT_ANNOTATION,
)
from fleet.controller.rollouts import seconds as moment_of
from fleet.devenv.kubeapi import APIStatusError, KubeAPI
from fleet.devenv.toolchain import built_binary
from fleet.errors import TemporaryError
from fleet.rollout import FIELDS

JSON = dict[str, Any]
T = TypeVar("T")

NAME = "bench"  # the Addon and the AddonProfile
TARGET_NAMESPACE = "bench-rollout"  # on every workload cluster
DEFAULT_STATE_DIR = Path("/tmp/fleet-bench-rollout")  # noqa: S108 (a well-known place to reuse)
DEFAULT_ROLLOUTS: tuple[JSON | None, ...] = (
    None,
    {"canary": 1, "maxUnavailable": "25%"},
    {"canary": 1, "maxUnavailable": "25%", "byDatacenter": True},
    {"canary": 1, "maxUnavailable": 1, "byDatacenter": True},
)
LEADING_TIMEOUT = 120.0
PROGRESS_SECONDS = 10.0
INTERRUPTED_CLEANUP_SECONDS = 60.0


class Stop(Exception):
    """A setting that cannot go on (timed out, halted, the controller exited)."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


# --- What the benchmark writes --------------------------------------------------------------


def addon_body(version: int) -> JSON:
    return {
        "apiVersion": API_VERSION,
        "kind": "Addon",
        "metadata": {"name": NAME},
        "spec": {
            "kind": "manifests",
            "defaultNamespace": TARGET_NAMESPACE,
            "templates": {
                "00-namespace.yaml": (
                    f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {TARGET_NAMESPACE}\n"
                ),
                "cm.yaml": config_map(version),
            },
        },
    }


def config_map(version: int) -> str:
    head = f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {NAME}\n"
    return head + f'data:\n  version: "{version}"\n'


def profile_body(rollout: JSON | None) -> JSON:
    spec: JSON = {"clusterSelector": {}, "addons": [{"name": NAME}]}
    if rollout is not None:
        spec["rollout"] = rollout
    return {
        "apiVersion": API_VERSION,
        "kind": "AddonProfile",
        "metadata": {"name": NAME},
        "spec": spec,
    }


def describe(rollout: JSON | None) -> str:
    """A setting as the table shows it: "canary 1, maxUnavailable 25%, byDatacenter"."""
    if rollout is None:
        return "all at once (no spec.rollout)"
    parts = []
    for key in FIELDS:
        value = rollout.get(key)
        if value is None or value is False:
            continue
        if value is True:
            parts.append(key)
        elif isinstance(value, list):
            parts.append(f"{key} {','.join(str(v) for v in value)}")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts) or "spec.rollout {} (the defaults)"


# --- Reading the fleet ------------------------------------------------------------------------


class Fleet:
    """The management API paths this benchmark reads and writes, in one namespace."""

    def __init__(self, api: KubeAPI, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        base = f"{FLEET_API}/namespaces/{namespace}"
        self.addons = f"{base}/addons"
        self.addon = f"{self.addons}/{NAME}"
        self.profiles = f"{base}/addonprofiles"
        self.profile = f"{self.profiles}/{NAME}"
        selector = urllib.parse.quote(f"{LABEL_PROFILE}={NAME}")
        self.deployments = f"{base}/addondeployments?labelSelector={selector}"

    def clusters(self) -> list[JSON]:
        items: list[JSON] = self.api.get(f"{CAPI_API}/namespaces/{self.namespace}/clusters")[
            "items"
        ]
        return sorted(items, key=lambda c: c["metadata"]["name"])

    def other_profiles(self) -> list[str]:
        items = self.api.get(f"{FLEET_API}/addonprofiles")["items"]
        return [
            f"{i['metadata']['namespace']}/{i['metadata']['name']}"
            for i in items
            if (i["metadata"]["namespace"], i["metadata"]["name"]) != (self.namespace, NAME)
        ]

    def put_addon(self, version: int) -> None:
        """Create the Addon, or replace it whole."""
        body = addon_body(version)
        status, found = self.api.request("GET", self.addon, allow=(404,))
        if status == 404:
            self.api.create(self.addons, body)
            return
        body["metadata"]["resourceVersion"] = found["metadata"]["resourceVersion"]
        self.api.request("PUT", self.addon, body)

    def look(self) -> Look:
        status, profile = self.api.request("GET", self.profile, allow=(404,))
        items: list[JSON] = self.api.get(self.deployments)["items"]
        return Look(profile if status != 404 else None, items)


@dataclass(frozen=True, slots=True)
class Look:
    """The profile and its AddonDeployments, read once."""

    profile: JSON | None
    deployments: list[JSON]

    @property
    def revision(self) -> str:
        """The revision the profile asks for, once the controller has seen its spec."""
        if self.profile is None:
            return ""
        status = self.profile.get("status") or {}
        if status.get("observedGeneration") != self.profile["metadata"].get("generation"):
            return ""
        return str(status.get("revision") or "")

    @property
    def rollout(self) -> JSON:
        if self.profile is None:
            return {}
        record: JSON = (self.profile.get("status") or {}).get("rollout") or {}
        return record

    def by_cluster(self) -> dict[str, JSON]:
        return {d["spec"]["cluster"]: d for d in self.deployments}

    def settled(self, clusters: int, revision: str, *, rollout: bool) -> bool:
        """Every cluster Ready on `revision`, and with a rollout the profile says Complete."""
        if not revision or len(self.deployments) != clusters:
            return False
        if not all(ready_on(d, revision) for d in self.deployments):
            return False
        record = self.rollout
        complete = record.get("phase") == "Complete" and record.get("target") == revision
        return complete or not rollout


def on_revision(deployment: JSON, revision: str) -> bool:
    return bool((deployment.get("spec") or {}).get("profileRevision") == revision)


def ready_on(deployment: JSON, revision: str) -> bool:
    """Moved to `revision`, and Ready on exactly what it was last given."""
    status = deployment.get("status") or {}
    return (
        on_revision(deployment, revision)
        and status.get("phase") == "Ready"
        and status.get("observedGeneration") == deployment["metadata"].get("generation")
        and status.get("appliedRevision") == deployment["spec"].get("revision")
    )


def moved_at(deployment: JSON) -> float | None:
    return moment_of((deployment["metadata"].get("annotations") or {}).get(MOVED_AT_ANNOTATION))


# --- The controller ---------------------------------------------------------------------------


def start_controller(kubeconfig: str, log_file: Path) -> Controller:
    controller = Controller(kubeconfig, log_file)
    helm = built_binary("helm")
    if helm.exists():  # the bench add-on is plain manifests: helm only as the fleet runs it
        controller.command += ["--helm", str(helm)]
    controller.start()
    log(f"controller started (pid {controller.pid}, log {log_file})")
    began = time.monotonic()
    while not leads(controller):
        code = controller.exit_code()
        if code is not None:
            tail = "\n    ".join(controller.log_tail())
            raise SystemExit(f"the controller exited with code {code}:\n    {tail}")
        if time.monotonic() - began > LEADING_TIMEOUT:
            raise SystemExit(f"the controller does not lead after {LEADING_TIMEOUT:.0f} s")
        time.sleep(0.2)
    log(f"controller leads {time.monotonic() - began:.1f} s after the start")
    return controller


def leads(controller: Controller) -> bool:
    """Only the leader answers /healthz with 200."""
    try:
        answer = urllib3.request("GET", f"http://{controller.health}/healthz", timeout=2.0)
    except urllib3.exceptions.HTTPError:
        return False
    return answer.status == 200


def reconciles(controller: Controller) -> tuple[float, float]:
    """AddonDeployment reconciles so far: how many, and their total seconds."""
    try:
        answer = urllib3.request("GET", f"http://{controller.metrics}/metrics", timeout=5.0)
    except urllib3.exceptions.HTTPError:
        return 0.0, 0.0
    count = total = 0.0
    for line in answer.data.decode().splitlines():
        if line.startswith("fleet_reconcile_duration_seconds_count"):
            count += float(line.split()[-1])
        elif line.startswith("fleet_reconcile_duration_seconds_sum"):
            total += float(line.split()[-1])
    return count, total


# --- One setting ------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    setting: str
    rollout: JSON | None
    clusters: int
    outcome: str = "not started"
    install_seconds: float | None = None
    revisions: list[str] = field(default_factory=list)  # from, to
    # From the write of version 2, seconds:
    rollout_seconds: float | None = None  # until all Ready on it and (rollout) Complete, as seen
    all_ready_seconds: float | None = None  # until every deployment was seen Ready on it
    completed_at_seconds: float | None = None  # until status.rollout.completedAt
    first_move_seconds: float | None = None  # until the first moved-at
    last_move_seconds: float | None = None
    # Of the clusters: moved-at → seen Ready on the new revision (seconds, median and max).
    apply_seconds_median: float | None = None
    apply_seconds_max: float | None = None
    # Between the first move and the last Ready: time with no cluster in flight.
    handover_seconds: float | None = None
    waves: list[JSON] = field(default_factory=list)
    per_cluster: dict[str, JSON] = field(default_factory=dict)
    reconciles: JSON = field(default_factory=dict)
    withdraw_seconds: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def slowest_wave(self) -> float | None:
        timed = [w["seconds"] for w in self.waves if w.get("seconds") is not None]
        return max(timed) if timed else None


class SettingRun:
    """Install at version 1, time the change to version 2, withdraw."""

    def __init__(
        self,
        fleet: Fleet,
        controller: Controller,
        workloads: list[Plane],
        clusters: int,
        rollout: JSON | None,
        options: argparse.Namespace,
    ) -> None:
        self.fleet = fleet
        self.controller = controller
        self.workloads = workloads
        self.clusters = clusters
        self.rollout = rollout
        self.options = options
        self.result = Result(describe(rollout), rollout, clusters)

    def say(self, message: str) -> None:
        log(f"[{self.result.setting}] {message}")

    def run(self) -> Result:
        """Measure; then withdraw the profile (not after Ctrl-C: main cleans up then)."""
        try:
            first = self.install()
            self.roll(first)
            self.result.outcome = "complete"
            self.say(f"measured: {figures(self.result)}")
        except Stop as stop:
            self.result.outcome = stop.outcome
            self.result.problems.append(str(stop))
            self.say(f"{stop.outcome}: {stop}")
            tail = self.controller.log_tail()
            if tail:
                self.result.problems.append("controller log: " + " | ".join(tail[-5:]))
        except (TemporaryError, APIStatusError) as error:
            self.result.outcome = "error"
            self.result.problems.append(f"{type(error).__name__}: {error}")
            self.say(f"failed: {error}")
        if self.controller.exit_code() is None:
            self.result.withdraw_seconds = withdraw(self.fleet, self.workloads, self.options)
        return self.result

    def wait(self, what: str, ready: Callable[[Look], T | None]) -> T:
        """Poll until `ready` answers something; progress every 10 s; bounded by --timeout."""
        began = last = time.monotonic()
        while True:
            look = self.fleet.look()
            answer = ready(look)
            if answer is not None:
                return answer
            self.check(began, what, look)
            if time.monotonic() - last >= PROGRESS_SECONDS:
                self.say(f"waiting for {what}: {progress(look)}")
                last = time.monotonic()
            time.sleep(self.options.poll)

    def check(self, began: float, what: str, look: Look) -> None:
        code = self.controller.exit_code()
        if code is not None:
            raise Stop("controller exited", f"the controller exited with code {code}")
        record = look.rollout
        if record.get("phase") in ("Halted", "RollingBack"):
            reason = f"{record.get('failingCluster')}: {record.get('reason')}"
            raise Stop(record["phase"].lower(), f"rollout {record['phase']} ({reason})")
        if time.monotonic() - began > self.options.timeout:
            raise Stop(
                "timeout", f"{what}: not after {self.options.timeout:.0f} s: {progress(look)}"
            )

    def install(self) -> str:
        """Addon at version 1 and the profile; the revision once every cluster is on it."""
        began = time.monotonic()
        self.fleet.put_addon(1)
        self.fleet.api.create(self.fleet.profiles, profile_body(self.rollout))
        rollout = self.rollout is not None

        def installed(look: Look) -> str | None:
            settled = look.settled(self.clusters, look.revision, rollout=rollout)
            return look.revision if settled else None

        revision = self.wait("version 1 on every cluster", installed)
        self.result.install_seconds = round(time.monotonic() - began, 2)
        self.say(
            f"version 1 ({revision}) on all {self.clusters} clusters in "
            f"{self.result.install_seconds} s"
        )
        return revision

    def roll(self, first: str) -> None:
        """Version 2: from the write until every cluster is Ready on it (and Complete)."""
        rollout = self.rollout is not None
        seen_ready: dict[str, float] = {}
        count_before, sum_before = reconciles(self.controller)
        wall = time.time()
        began = time.monotonic()
        self.fleet.api.merge_patch(
            self.fleet.addon, {"spec": {"templates": {"cm.yaml": config_map(2)}}}
        )
        self.say(f"version 2 written ({1000 * (time.monotonic() - began):.0f} ms)")
        target = ""
        last_print, last_line = began, ""
        while True:
            look = self.fleet.look()
            at = time.monotonic() - began
            if not target and look.revision and look.revision != first:
                target = look.revision
            if target:
                for d in look.deployments:
                    if ready_on(d, target):
                        seen_ready.setdefault(d["spec"]["cluster"], at)
                if len(seen_ready) == self.clusters and self.result.all_ready_seconds is None:
                    self.result.all_ready_seconds = round(at, 2)
                if look.settled(self.clusters, target, rollout=rollout):
                    self.result.rollout_seconds = round(at, 2)
                    break
            self.check(began, "version 2 on every cluster", look)
            line = progress(look, target)
            if line != last_line or time.monotonic() - last_print >= PROGRESS_SECONDS:
                self.say(f"{at:5.1f} s: {line}")
                last_print, last_line = time.monotonic(), line
            time.sleep(self.options.poll)
        count_after, sum_after = reconciles(self.controller)
        count = count_after - count_before
        self.result.reconciles = {
            "count": int(count),
            "seconds": round(sum_after - sum_before, 2),
            "mean_seconds": round((sum_after - sum_before) / count, 3) if count else None,
        }
        self.result.revisions = [first, target]
        self.account(look, target, wall, seen_ready)

    def account(self, look: Look, target: str, wall: float, seen_ready: dict[str, float]) -> None:
        """Waves, moves and hand-overs from the controller's timestamps and what was seen."""
        record = look.rollout

        def after(value: str | None) -> float | None:
            moment = moment_of(value)
            return None if moment is None else round(moment - wall, 3)

        self.result.completed_at_seconds = after(record.get("completedAt"))
        previous_end: float | None = None
        for wave in record.get("waves") or []:
            if wave.get("revision") != target:
                continue
            started, completed = after(wave.get("started")), after(wave.get("completed"))
            self.result.waves.append(
                {
                    "name": wave["name"],
                    "clusters": list(wave.get("clusters") or []),
                    "started": started,
                    "completed": completed,
                    "seconds": round(completed - started, 3)
                    if started is not None and completed is not None
                    else None,
                    "gap_before": round(started - previous_end, 3)
                    if started is not None and previous_end is not None
                    else None,
                }
            )
            previous_end = completed
        moves: dict[str, float] = {}
        for name, deployment in look.by_cluster().items():
            moment = moved_at(deployment)
            if moment is not None:
                moves[name] = round(moment - wall, 3)
        for name in sorted(moves):
            self.result.per_cluster[name] = {
                "moved": moves[name],
                "ready_seen": round(seen_ready[name], 2) if name in seen_ready else None,
            }
        if not moves:
            return
        self.result.first_move_seconds = min(moves.values())
        self.result.last_move_seconds = max(moves.values())
        spans = [(moves[n], seen_ready[n]) for n in moves if n in seen_ready]
        applies = [end - start for start, end in spans]
        if applies:
            self.result.apply_seconds_median = round(statistics.median(applies), 2)
            self.result.apply_seconds_max = round(max(applies), 2)
            self.result.handover_seconds = round(idle_between(spans), 2)


def idle_between(spans: list[tuple[float, float]]) -> float:
    """Time between the first start and the last end that no span covers."""
    idle, reach = 0.0, None
    for start, end in sorted(spans):
        if reach is not None and start > reach:
            idle += start - reach
        reach = end if reach is None else max(reach, end)
    return idle


def progress(look: Look, target: str = "") -> str:
    revision = target or look.revision
    phases = Counter((d.get("status") or {}).get("phase") or "-" for d in look.deployments)
    moved = sum(1 for d in look.deployments if revision and on_revision(d, revision))
    ready = sum(1 for d in look.deployments if revision and ready_on(d, revision))
    if target or not look.revision:
        text = f"{moved}/{len(look.deployments)} on {revision or '?'}, {ready} Ready there"
    else:
        text = f"the profile still asks for {look.revision}"
    record = look.rollout
    if record:
        text += f"; rollout {record.get('phase')}"
        text += f" at {record['wave']}" if record.get("wave") else ""
    shown = ", ".join(f"{p} {n}" for p, n in sorted(phases.items()))
    return f"{text} ({shown or 'no deployments'})"


def withdraw(fleet: Fleet, workloads: list[Plane], options: argparse.Namespace) -> float | None:
    """Delete the profile; wait until its deployments are gone and so is the add-on's
    namespace on every workload plane (a Terminating one would slow the next install)."""
    began = time.monotonic()
    fleet.api.request("DELETE", fleet.profile, allow=(404,))

    def left() -> dict[str, int]:
        look = fleet.look()
        return {
            "profile": int(look.profile is not None),
            "AddonDeployments": len(look.deployments),
            f"namespaces {TARGET_NAMESPACE} terminating": sum(
                1 for plane in workloads if terminating(plane.api, TARGET_NAMESPACE)
            ),
        }

    remaining = left()
    last = began
    while any(remaining.values()):
        if time.monotonic() - began > options.timeout:
            log(
                f"profile {NAME} deleted; NOT cleaned up after {options.timeout:.0f} s: {remaining}"
            )
            return None
        if time.monotonic() - last >= PROGRESS_SECONDS:
            log(f"withdrawing profile {NAME}: {remaining} left")
            last = time.monotonic()
        time.sleep(options.poll)
        remaining = left()
    seconds = round(time.monotonic() - began, 2)
    log(f"profile {NAME} deleted; the controller cleaned up in {seconds} s")
    return seconds


def terminating(api: KubeAPI, namespace: str) -> bool:
    status, body = api.request("GET", f"/api/v1/namespaces/{namespace}", allow=(404,))
    return status != 404 and (body.get("status") or {}).get("phase") == "Terminating"


# --- Output -----------------------------------------------------------------------------------


COLUMNS = ("SETTING", "CLUSTERS", "WAVES", "ROLLOUT_S", "SLOWEST_WAVE_S")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def row(result: Result) -> list[str]:
    done = result.outcome == "complete"
    return [
        result.setting,
        str(result.clusters),
        str(len(result.waves)) if result.waves else "-",
        _num(result.rollout_seconds) if done else result.outcome,
        _num(result.slowest_wave),
    ]


def figures(result: Result) -> str:
    return ", ".join(f"{n}={v}" for n, v in zip(COLUMNS[1:], row(result)[1:], strict=True))


def print_table(results: list[Result], header: str) -> None:
    print(header)
    rows = [list(COLUMNS), *(row(r) for r in results)]
    for line in aligned(rows, "  "):
        print(line)
    print()
    print("  ROLLOUT_S: from the write of version 2 until every cluster was seen Ready on the")
    print("    new revision and, with spec.rollout, status.rollout Complete.")
    print("  WAVES, SLOWEST_WAVE_S: status.rollout.waves of the new revision, started→completed.")
    print("  Per setting: seconds after the write; a move is the moved-at annotation, Ready is")
    print("    as polled (so up to --poll late); in flight: moved and not yet seen Ready.")
    for result in results:
        print(f"  {result.setting}:")
        for line in details(result):
            print(f"    {line}")


def details(result: Result) -> list[str]:
    lines = []
    if result.first_move_seconds is not None:
        lines.append(
            f"first move {result.first_move_seconds:.2f} s after the write, last "
            f"{result.last_move_seconds:.2f} s; moved→Ready per cluster median "
            f"{_num(result.apply_seconds_median, 2)} s, max {_num(result.apply_seconds_max, 2)} s;"
            f" nothing in flight for {_num(result.handover_seconds, 2)} s in between"
        )
    if result.completed_at_seconds is not None:
        lines.append(
            f"status.rollout.completedAt {result.completed_at_seconds:.2f} s after the write "
            f"(all Ready seen at {_num(result.all_ready_seconds, 2)} s)"
        )
    for wave in result.waves:
        gap = wave.get("gap_before")
        lines.append(
            f"{wave['name']}: {plural(len(wave['clusters']), 'cluster')}, "
            f"{_num(wave['started'], 2)}→{_num(wave['completed'], 2)} s = "
            f"{_num(wave['seconds'], 2)} s"
            + (f" ({gap:.2f} s after the wave before)" if gap is not None else "")
        )
    if result.reconciles.get("count"):
        lines.append(
            f"{result.reconciles['count']} AddonDeployment reconciles, "
            f"{result.reconciles['seconds']} s in all (mean {result.reconciles['mean_seconds']} s)"
        )
    if result.install_seconds is not None:
        lines.append(f"version 1 installed in {result.install_seconds:.1f} s")
    lines += result.problems
    return lines


# --- main -------------------------------------------------------------------------------------


def rollout_setting(text: str) -> JSON | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("a spec.rollout object, or none")
    unknown = sorted(set(value) - set(FIELDS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown field(s) {', '.join(unknown)}")
    if value.get("pauseAfterCanary"):
        raise argparse.ArgumentTypeError("pauseAfterCanary waits for a person: not timed here")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hack/bench/rollout_e2e.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
    )
    parser.add_argument(
        "--clusters", type=int, default=12, help="workload clusters of a fleet started here (12)"
    )
    parser.add_argument(
        "--datacenters", type=int, default=3, help="datacenters of a fleet started here (3)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"reuse the local fleet running from DIR, or start one there ({DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--rollout",
        type=rollout_setting,
        action="append",
        default=None,
        metavar="none|JSON",
        help="a setting to time: `none` (no spec.rollout) or a spec.rollout as JSON, e.g. "
        '\'{"canary": 1, "maxUnavailable": "25%%"}\'; repeat for several (default: the four '
        "above)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave a fleet started here running at the end"
    )
    parser.add_argument(
        "--poll", type=float, default=0.25, metavar="S", help="seconds between looks (0.25)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="bound on every wait (600)"
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the controller's log goes (default: a new temporary directory)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="save the figures")
    options = parser.parse_args(argv)
    if options.rollout is None:
        options.rollout = list(DEFAULT_ROLLOUTS)
    if options.poll <= 0 or options.timeout <= 0 or options.clusters < 1:
        parser.error("--poll, --timeout and --clusters must be positive")
    return options


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Clean-up that a second Ctrl-C must not cut short (it would leave a controller)."""
    before = (
        signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.signal(signal.SIGTERM, signal.SIG_IGN),
    )
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def describe_clusters(clusters: list[JSON]) -> tuple[str, list[str]]:
    datacenters = Counter(
        (c["metadata"].get("labels") or {}).get(LABEL_DATACENTER, "-") for c in clusters
    )
    canaries = [
        c["metadata"]["name"]
        for c in clusters
        if (c["metadata"].get("labels") or {}).get(LABEL_CANARY) == "true"
    ]
    spread = ", ".join(f"{dc} {n}" for dc, n in sorted(datacenters.items()))
    return spread, canaries


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    command = shlex.join(
        ["python3", "hack/bench/rollout_e2e.py", *(sys.argv[1:] if argv is None else argv)]
    )
    state_dir = options.state_dir.resolve()
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="fleet-rollout-logs-"))
    began = time.monotonic()
    started_here = running_fleet(state_dir) is None
    controller: Controller | None = None
    results: list[Result] = []
    header = ""
    report: JSON = {
        "command": command,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "cpus": os.cpu_count(),
        "state_dir": str(state_dir),
        "controller_log": str(log_dir / "controller.log"),
    }
    interrupted = False
    fleet: Fleet | None = None
    try:
        state = bring_up(state_dir, options.clusters, options.datacenters).state
        management, workloads = planes_of(state)
        wait_for_api(management.api, state)
        fleet = Fleet(management.api, state.namespace)
        clusters = fleet.clusters()
        spread, canaries = describe_clusters(clusters)
        header = (
            f"progressive rollout, end to end: {len(clusters)} clusters ({spread}) of the local "
            f"fleet in {state_dir}, one controller, {os.cpu_count()} CPUs, {report['revision']}"
        )
        log(header)
        if canaries:
            log(f"note: clusters labelled {LABEL_CANARY}=true go first: {', '.join(canaries)}")
        report.update(clusters=len(clusters), datacenters=spread, canaries=canaries)
        others = fleet.other_profiles()
        if others:
            log(f"warning: the controller also works these profiles: {', '.join(others)}")
        management.api.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}},
        )
        no_other_leader(management.api)
        controller = start_controller(state.management_kubeconfig, log_dir / "controller.log")
        for rollout in options.rollout:
            if fleet.look().profile is not None:
                log(f"profile {NAME} left behind (an earlier run or setting): withdrawing it")
                withdraw(fleet, workloads, options)
            run = SettingRun(fleet, controller, workloads, len(clusters), rollout, options)
            try:
                results.append(run.run())
            except KeyboardInterrupt:
                run.result.outcome = "interrupted"
                results.append(run.result)
                raise
            except (TemporaryError, APIStatusError) as error:
                run.result.outcome = "error"
                run.result.problems.append(f"{type(error).__name__}: {error}")
                log(f"[{run.result.setting}] failed: {error}")
                results.append(run.result)
            if controller.exit_code() is not None:
                log("the controller has exited: no further settings")
                break
        with contextlib.suppress(TemporaryError, APIStatusError):
            fleet.api.request("DELETE", fleet.addon, allow=(404,))
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: cleaning up")
    finally:
        with uninterrupted():
            going_down = started_here and not options.keep
            try:
                if interrupted and controller is not None and fleet is not None and not going_down:
                    # The fleet stays: let the controller undo the profile while it still runs.
                    quick = argparse.Namespace(timeout=INTERRUPTED_CLEANUP_SECONDS, poll=1.0)
                    with contextlib.suppress(Exception):
                        withdraw(fleet, [], quick)
                        fleet.api.request("DELETE", fleet.addon, allow=(404,))
            finally:
                if controller is not None:
                    log(f"controller {controller.stop()}")
                if going_down:
                    bring_down(state_dir)
                elif started_here:
                    log(f"fleet left running: python -m fleet dev down --state-dir {state_dir}")
    wall = time.monotonic() - began
    print_table(results, header)
    print(f"  wall time of the whole run: {wall:.0f} s")
    print()
    print(f"$ {command}")
    report.update(wall_seconds=round(wall, 1), results=[asdict(r) for r in results])
    if options.json:
        options.json.write_text(json.dumps(report, indent=2))
        log(f"figures saved to {options.json}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    # Started in the background by a non-interactive shell, SIGINT arrives ignored: Ctrl-C
    # (kill -INT) and kill -TERM must still stop the controller and the fleet.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
