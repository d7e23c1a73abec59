import pytest

from fleet.devenv.toolchain import TOOLS, BuildError, k8s_minor, pinned_version, plan_build

KUBE_GO_MOD = """module fleet.mlops.dev/hack/tools/kube

go 1.25.0

require k8s.io/kubernetes v1.35.4

require (
	k8s.io/client-go v0.35.4 // indirect
)

replace (
	k8s.io/api => k8s.io/api v0.35.4
	k8s.io/client-go => k8s.io/client-go v0.35.4
)
"""


def test_pinned_version_reads_require_and_prefers_replace():
    assert pinned_version(KUBE_GO_MOD, "k8s.io/kubernetes") == "v1.35.4"
    assert (
        pinned_version(
            "require (\n\tfoo.io/x v1.0.0\n)\nreplace foo.io/x => foo.io/x v1.0.1\n", "foo.io/x"
        )
        == "v1.0.1"
    )
    assert k8s_minor(KUBE_GO_MOD) == "35"


def test_missing_pin_names_the_module():
    with pytest.raises(BuildError, match=r"go\.mod pins no version of sigs\.k8s\.io/kwok"):
        pinned_version(KUBE_GO_MOD, "sigs.k8s.io/kwok")


def test_build_plan_stamps_versions_and_changes_with_go_sum(tmp_path):
    kube = next(tool for tool in TOOLS if tool.name == "kube")
    (tmp_path / "go.mod").write_text(KUBE_GO_MOD)
    (tmp_path / "go.sum").write_text("a\n")
    first = plan_build(kube, tmp_path)
    assert first.version == "v1.35.4"
    ldflags = next(arg for arg in first.args if arg.startswith("-ldflags="))
    assert "-X k8s.io/component-base/version.gitVersion=v1.35.4" in ldflags
    assert "-X k8s.io/component-base/version.gitMinor=35" in ldflags
    assert "-tags=selinux,notest,grpcnotrace" in first.args
    assert plan_build(kube, tmp_path).digest == first.digest
    (tmp_path / "go.sum").write_text("b\n")
    assert plan_build(kube, tmp_path).digest != first.digest


def test_every_tool_module_pins_its_version():
    from fleet.devenv.toolchain import tools_dir

    for tool in TOOLS:
        plan = plan_build(tool, tools_dir() / tool.name)
        assert plan.version.startswith("v"), tool.name


def test_a_missing_binary_says_how_to_rebuild_it(tmp_path):
    from fleet.devenv.toolchain import Toolchain

    toolchain = Toolchain(binaries={"etcd": tmp_path / "etcd"})
    with pytest.raises(BuildError) as error:
        toolchain.path("etcd")
    assert (
        str(error.value)
        == f"{tmp_path / 'etcd'} is missing; run `fleet dev build` to build it again"
    )


def test_one_build_of_a_tool_at_a_time(tmp_path, monkeypatch):
    """Two builders of one tool (two `fleet dev up` on a cold cache) take turns."""
    import threading
    import time

    from fleet.devenv.toolchain import _building

    monkeypatch.setenv("FLEET_TESTENV_CACHE", str(tmp_path))
    inside, most = [0], [0]
    guard = threading.Lock()

    def build() -> None:
        with _building("kwok"):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1
    assert (tmp_path / "locks" / "kwok.lock").exists()
