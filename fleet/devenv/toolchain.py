"""Build the local fleet's binaries from their Go modules, once, into a cache.

The versions are pinned in `hack/tools/<tool>/go.mod` (and checksummed by its
go.sum); this module only reads them. Each tool lands in
`<cache>/<tool>/<version>-<hash>/`, where the hash covers the go.mod, go.sum
and build flags, so a second run with everything built only hashes a few
files. The Cluster API CRDs come from the module cache the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleet.errors import BuildError

Report = Callable[[str], None]

HEARTBEAT_SECONDS = 30.0
LOG_TAIL_LINES = 30


def _quiet(_: str) -> None:
    """Report nothing; the default for library callers."""


@dataclass(frozen=True, slots=True)
class GoTool:
    """One binary built from a wrapper module under hack/tools/."""

    name: str
    module: str
    package: str
    binary: str
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    note: str = ""


_K8S_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")

TOOLS: tuple[GoTool, ...] = (
    GoTool(
        name="kube",
        module="k8s.io/kubernetes",
        package=".",
        binary="kube",
        aliases=("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
        tags=("selinux", "notest", "grpcnotrace"),
        ldflags=tuple(
            flag
            for package in _K8S_VERSION_PACKAGES
            for flag in (
                f"-X {package}.gitVersion={{version}}",
                f"-X {package}.gitMajor=1",
                f"-X {package}.gitMinor={{k8s_minor}}",
                f"-X {package}.gitTreeState=clean",
            )
        ),
        note="a cold build of the Kubernetes tree takes about 5 min on 2 cores",
    ),
    GoTool(
        name="etcd",
        module="go.etcd.io/etcd/server/v3",
        package="go.etcd.io/etcd/server/v3",
        binary="etcd",
    ),
    GoTool(
        name="kwok", module="sigs.k8s.io/kwok", package="sigs.k8s.io/kwok/cmd/kwok", binary="kwok"
    ),
    GoTool(
        name="helm",
        module="helm.sh/helm/v3",
        package="helm.sh/helm/v3/cmd/helm",
        binary="helm",
        # Without these, offline `helm template` assumes an old cluster version.
        ldflags=(
            "-X helm.sh/helm/v3/internal/version.version={version}",
            "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
            "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={k8s_minor}",
            "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
            "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={k8s_minor}",
        ),
    ),
    GoTool(name="oras", module="oras.land/oras", package="oras.land/oras/cmd/oras", binary="oras"),
    GoTool(
        name="registry",
        module="github.com/distribution/distribution/v3",
        package="github.com/distribution/distribution/v3/cmd/registry",
        binary="registry",
        ldflags=("-X github.com/distribution/distribution/v3/version.version={version}",),
    ),
    # Its wrapper module also pins the nested module sigs.k8s.io/cluster-api/api at the same
    # version. Run it with CLUSTERCTL_DISABLE_VERSIONCHECK=true (`fleet dev env` sets it),
    # or it looks up its latest release to suggest an upgrade.
    GoTool(
        name="clusterctl",
        module="sigs.k8s.io/cluster-api",
        package="sigs.k8s.io/cluster-api/cmd/clusterctl",
        binary="clusterctl",
        # Without these, `clusterctl version` reports an empty version.
        ldflags=(
            "-X sigs.k8s.io/cluster-api/version.gitVersion={version}",
            "-X sigs.k8s.io/cluster-api/version.gitMajor={version_major}",
            "-X sigs.k8s.io/cluster-api/version.gitMinor={version_minor}",
            "-X sigs.k8s.io/cluster-api/version.gitTreeState=clean",
        ),
        note="a cold build takes about 3.5 min on 2 cores",
    ),
)


@dataclass(frozen=True, slots=True)
class ModuleAsset:
    """Files the fleet reads from a pinned Go module's source, never copied into git."""

    name: str
    tool_dir: str
    module: str
    patterns: tuple[str, ...]
    output: str


CAPI_CRDS = ModuleAsset(
    name="cluster-api-crds",
    tool_dir="capi",
    module="sigs.k8s.io/cluster-api",
    patterns=("core/config/crd/bases/*.yaml",),
    output="crds.json",
)
# kwok's binary has no built-in stages (kwokctl passes them in); these are its defaults.
KWOK_STAGES = ModuleAsset(
    name="kwok-stages",
    tool_dir="kwok",
    module="sigs.k8s.io/kwok",
    patterns=(
        "kustomize/stage/node/fast/node-initialize.yaml",
        "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
        "kustomize/stage/pod/fast/pod-ready.yaml",
        "kustomize/stage/pod/fast/pod-complete.yaml",
        "kustomize/stage/pod/fast/pod-delete.yaml",
    ),
    output="stages.yaml",
)
ASSETS = (CAPI_CRDS, KWOK_STAGES)


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def tools_dir() -> Path:
    return Path(os.environ.get("FLEET_TOOLS_DIR", repo_root() / "hack" / "tools"))


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fleet" / "testenv"
    return Path(os.environ.get("FLEET_TESTENV_CACHE", default))


def pinned_version(go_mod: str, module: str) -> str:
    """The version go.mod pins for `module`; a `replace` line wins over `require`."""
    pattern = re.compile(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", re.MULTILINE)
    replaced = re.compile(rf"=>\s*{re.escape(module)}\s+(v\S+)", re.MULTILINE)
    found = replaced.findall(go_mod) or pattern.findall(go_mod)
    if not found:
        raise BuildError(f"go.mod pins no version of {module}")
    return str(found[-1])


def major_minor(version: str) -> tuple[str, str]:
    """The numeric major and minor of a semantic version such as v1.14.2."""
    match = re.match(r"v(\d+)\.(\d+)\.", version)
    if not match:
        raise BuildError(f"cannot tell the major and minor of version {version}")
    return match.group(1), match.group(2)


def k8s_minor(go_mod: str) -> str:
    """The Kubernetes minor a module is built against, from its client-go pin."""
    client_go = pinned_version(go_mod, "k8s.io/client-go")
    match = re.match(r"v0\.(\d+)\.", client_go)
    if not match:
        raise BuildError(f"cannot tell the Kubernetes minor from k8s.io/client-go {client_go}")
    return match.group(1)


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """Everything that decides one tool's binary; its hash names the output folder."""

    tool: GoTool
    version: str
    args: tuple[str, ...]
    digest: str

    @property
    def output_dir(self) -> Path:
        return cache_dir() / self.tool.name / f"{self.version}-{self.digest[:10]}"

    @property
    def binary_path(self) -> Path:
        return self.output_dir / self.tool.binary


def plan_build(tool: GoTool, module_dir: Path) -> BuildPlan:
    go_mod = (module_dir / "go.mod").read_text()
    go_sum_path = module_dir / "go.sum"
    go_sum = go_sum_path.read_text() if go_sum_path.exists() else ""
    version = pinned_version(go_mod, tool.module)
    flags = " ".join(tool.ldflags)
    minor = k8s_minor(go_mod) if "{k8s_minor}" in flags else ""
    uses_major_minor = "{version_major}" in flags or "{version_minor}" in flags
    version_major, version_minor = major_minor(version) if uses_major_minor else ("", "")
    ldflags = [
        "-s",
        "-w",
        *(
            flag.format(
                version=version,
                k8s_minor=minor,
                version_major=version_major,
                version_minor=version_minor,
            )
            for flag in tool.ldflags
        ),
    ]
    args = ("build", "-trimpath", f"-tags={','.join(tool.tags)}", f"-ldflags={' '.join(ldflags)}")
    digest = hashlib.sha256(
        json.dumps([tool.name, tool.package, args, go_mod, go_sum]).encode()
    ).hexdigest()
    return BuildPlan(tool=tool, version=version, args=args, digest=digest)


def built_binary(name: str) -> Path:
    """Where the local fleet's build of the tool `name` is (or will be, once built)."""
    tool = next(t for t in TOOLS if t.name == name)
    return plan_build(tool, tools_dir() / tool.name).binary_path


@dataclass(slots=True)
class Toolchain:
    """Paths of the built binaries and of the Cluster API CRDs."""

    binaries: dict[str, Path] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    assets: dict[str, Path] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        try:
            binary = self.binaries[name]
        except KeyError:
            raise BuildError(f"no binary named {name!r} in the toolchain") from None
        if not binary.exists():
            raise BuildError(f"{binary} is missing; run `fleet dev build` to build it again")
        return binary

    def asset(self, asset: ModuleAsset) -> Path:
        path = self.assets.get(asset.name)
        if path is None or not path.exists():
            raise BuildError(f"{asset.name} are not extracted; run `fleet dev build`")
        return path

    def load_capi_crds(self) -> list[dict[str, Any]]:
        crds: list[dict[str, Any]] = json.loads(self.asset(CAPI_CRDS).read_text())
        return crds


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-mod=readonly")
    return env


def _go() -> str:
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if go is None:
        raise BuildError(
            "`go` is not on PATH: the local fleet's binaries are built with Go >= 1.26"
        )
    return go


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _run_logged(command: list[str], cwd: Path, log_path: Path, label: str, report: Report) -> None:
    """Run a (possibly long) command into a log file, reporting a heartbeat meanwhile."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=_go_env(), stdout=log, stderr=subprocess.STDOUT
        )
        finished = threading.Event()

        def heartbeat() -> None:
            while not finished.wait(HEARTBEAT_SECONDS):
                report(f"  … still {label} ({time.monotonic() - started:.0f}s)")

        ticker = threading.Thread(target=heartbeat, daemon=True)
        ticker.start()
        try:
            code = process.wait()
        finally:
            finished.set()
    if code != 0:
        raise BuildError(
            f"{label} failed (exit {code}) in {cwd}\n"
            f"command: {' '.join(command)}\n"
            f"full log: {log_path}\n{_tail(log_path)}"
        )


@contextlib.contextmanager
def _building(tool: str) -> Iterator[None]:
    """One build of a tool at a time across processes: two `fleet dev up` on a cold cache
    would otherwise share its staging directory and remove each other's output."""
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{tool}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(plan: BuildPlan, module_dir: Path, report: Report) -> None:
    staging = plan.output_dir.with_name(plan.output_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    command = [_go(), *plan.args, "-o", str(staging / plan.tool.binary), plan.tool.package]
    log_path = cache_dir() / "logs" / f"{plan.tool.name}.log"
    _run_logged(command, module_dir, log_path, f"building {plan.tool.name}", report)
    for alias in plan.tool.aliases:
        (staging / alias).symlink_to(plan.tool.binary)
    shutil.rmtree(plan.output_dir, ignore_errors=True)
    staging.rename(plan.output_dir)
    for superseded in plan.output_dir.parent.iterdir():
        if superseded != plan.output_dir:
            shutil.rmtree(superseded, ignore_errors=True)


def _extract(asset: ModuleAsset, report: Report) -> tuple[str, Path]:
    module_dir = tools_dir() / asset.tool_dir
    version = pinned_version((module_dir / "go.mod").read_text(), asset.module)
    target = cache_dir() / asset.name / version / asset.output
    if target.exists():
        return version, target
    report(f"extracting {asset.name} from {asset.module} {version} in the Go module cache")
    result = subprocess.run(
        [_go(), "mod", "download", "-json", asset.module],
        cwd=module_dir,
        env=_go_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"go mod download {asset.module} failed:\n{result.stdout}{result.stderr}")
    source = Path(json.loads(result.stdout)["Dir"])
    files = [path for pattern in asset.patterns for path in sorted(source.glob(pattern))]
    if len(files) < len(asset.patterns):
        raise BuildError(f"{asset.module} {version} lacks some of {', '.join(asset.patterns)}")
    if asset.output.endswith(".json"):
        content = json.dumps(
            [yaml.load(path.read_text(), Loader=yaml.CSafeLoader) for path in files]
        )
    else:
        content = "\n---\n".join(path.read_text().strip() for path in files) + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_text(content)
    partial.rename(target)
    return version, target


def ensure_toolchain(report: Report = _quiet, only: tuple[str, ...] = ()) -> Toolchain:
    """Build what is missing and return where everything is.

    `only` restricts the build to the named tools (the rest must already exist
    to be listed).
    """
    root = tools_dir()
    if not root.is_dir():
        raise BuildError(
            f"{root} not found: building the local fleet needs a source checkout of fleet "
            "(or FLEET_TOOLS_DIR pointing at its hack/tools)"
        )
    toolchain = Toolchain()
    for index, tool in enumerate(TOOLS, start=1):
        module_dir = root / tool.name
        plan = plan_build(tool, module_dir)
        toolchain.versions[tool.name] = plan.version
        if not plan.binary_path.exists() and (not only or tool.name in only):
            with _building(tool.name):
                # Another `fleet dev up` or `build` may have built it while this one waited.
                if not plan.binary_path.exists():
                    note = f" — {tool.note}" if tool.note else ""
                    report(
                        f"[{index}/{len(TOOLS)}] building {tool.name} "
                        f"({tool.module} {plan.version}){note}"
                    )
                    started = time.monotonic()
                    _build(plan, module_dir, report)
                    report(
                        f"[{index}/{len(TOOLS)}] built {tool.name} "
                        f"in {time.monotonic() - started:.0f}s"
                    )
        for name in (tool.binary, *tool.aliases):
            toolchain.binaries[name] = plan.output_dir / name
    for asset in ASSETS:
        version, toolchain.assets[asset.name] = _extract(asset, report)
        toolchain.versions.setdefault(asset.tool_dir, version)
    for package in SYSTEM_PACKAGES:
        binary, version = system_binary(package, report)
        toolchain.binaries[package.binary] = binary
        toolchain.versions[package.binary] = version
    return toolchain


@dataclass(frozen=True, slots=True)
class SystemPackage:
    """A binary the local fleet takes from the distribution instead of building it."""

    binary: str
    debian_package: str
    why: str


# Prometheus: building it from its module needs its web UI built with npm first; Debian's
# package (2.42 on bookworm) has the agent mode and remote-write receiver fleet needs.
SYSTEM_PACKAGES = (SystemPackage("prometheus", "prometheus", "each datacenter's Prometheus"),)


def system_binary(package: SystemPackage, report: Report = _quiet) -> tuple[Path, str]:
    """The package's binary and version, installing the package with apt-get when it is
    missing (as root, or through sudo)."""
    found = shutil.which(package.binary)
    if found is None:
        apt = shutil.which("apt-get")
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        if apt is None or (sudo and shutil.which("sudo") is None):
            raise BuildError(
                f"{package.binary} is missing ({package.why}): install the Debian package "
                f"{package.debian_package!r} (apt-get install {package.debian_package})"
            )
        report(f"installing {package.debian_package} with apt-get ({package.why})")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            [*sudo, apt, "update", "-qq"],
            [*sudo, apt, "install", "-y", "-qq", "--no-install-recommends", package.debian_package],
        ):
            result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if result.returncode != 0:
                raise BuildError(
                    f"{' '.join(command)} failed ({package.why}):\n{result.stderr.strip()[-2000:]}"
                )
        found = shutil.which(package.binary)
        if found is None:
            raise BuildError(f"{package.debian_package} installed no {package.binary} on PATH")
    answer = subprocess.run(
        [found, "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    words = (answer.stdout or answer.stderr).split()
    version = words[2] if len(words) > 2 else "unknown"
    return Path(found), version
