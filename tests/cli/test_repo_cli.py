"""`fleet render | validate` of a fleet repository offline, and how `render` and `diff`
tell a repository from an add-on or profile name: exact exit codes and messages."""

import json
import shutil
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from fleet.cli import preview
from fleet.cli.either import VALUED, repository
from fleet.cli.main import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet-repo"


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def example(tmp_path):
    made = tmp_path / "fleet-repo"
    shutil.copytree(EXAMPLE, made)
    return made


def test_the_example_validates_offline():
    result = run("validate", str(EXAMPLE), "--offline", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"valid": True, "clusters": 4, "dryRun": False}


def test_render_writes_one_file_per_cluster_byte_identical_on_a_second_run(example, tmp_path):
    assert run("render", str(example), "-o", str(tmp_path / "a")).exit_code == 0
    assert run("render", str(example), "-o", str(tmp_path / "b")).exit_code == 0
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*.*")}
    second = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*.*")}
    assert first == second
    assert sorted(str(p) for p in first) == [
        "clusters/cpu-01.yaml",
        "clusters/gpu-01.yaml",
        "clusters/gpu-02.yaml",
        "clusters/gpu-03.yaml",
        "datacenters.yaml",
    ]
    cluster = yaml.safe_load(first[Path("clusters/gpu-02.yaml")])
    assert cluster["kind"] == "Cluster"
    assert cluster["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "fleet-cli"


def test_render_json_lists_every_object():
    result = run("render", str(EXAMPLE), "-o", "json")
    assert result.exit_code == 0
    kinds = sorted(o["kind"] for o in json.loads(result.stdout)["items"])
    assert kinds.count("Cluster") == 4 and kinds.count("Datacenter") == 2


def test_every_mistake_is_reported_with_its_place_and_exit_1(example):
    gpu02 = example / "clusters" / "gpu-02.yaml"
    gpu02.write_text(gpu02.read_text().replace("nodes: 2", 'nodes: "two"'))
    gpu03 = example / "clusters" / "gpu-03.yaml"
    gpu03.write_text(gpu03.read_text().replace("datacenter: dc-2", "datacenter: dc-9"))
    result = run("validate", str(example), "--offline")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[-1] == "2 problem(s)"
    assert any(line.startswith("clusters/gpu-02.yaml:") and "two" in line for line in lines)
    assert any(line.startswith("clusters/gpu-03.yaml:3:") and "dc-9" in line for line in lines)
    data = json.loads(run("validate", str(example), "--offline", "-o", "json").stdout)
    assert data["valid"] is False
    assert {p["file"] for p in data["problems"]} == {"clusters/gpu-02.yaml", "clusters/gpu-03.yaml"}


@pytest.mark.parametrize(
    ("args", "is_repository"),
    [
        ([], True),
        (["."], True),
        (["gpu-operator", "--cluster", "gpu-01"], False),
        (["--cluster", "gpu-01"], False),
        (["-n", "examples", "gpu-operator"], False),
        (["examples"], True),
    ],
)
def test_render_takes_a_directory_for_a_repository_and_a_name_for_an_addon(
    args, is_repository, monkeypatch
):
    monkeypatch.chdir(EXAMPLE.parents[1])
    assert repository(args) is is_repository


def test_every_option_of_the_addon_and_profile_commands_that_takes_a_value_is_known():
    taking = {
        opt
        for command in (preview.render, preview.diff)
        for p in command.params
        if isinstance(p, click.Option) and not p.is_flag and not p.count
        for opt in p.opts
    }
    assert taking == VALUED


def test_render_into_a_directory_removes_only_its_own_files_of_clusters_gone(example, tmp_path):
    out = tmp_path / "out"
    assert run("render", str(example), "-o", str(out)).exit_code == 0
    (out / "clusters" / "mine.yaml").write_text("kind: ConfigMap\n")  # not fleet's
    (example / "clusters" / "cpu-01.yaml").unlink()
    result = run("render", str(example), "-o", str(out))
    assert result.exit_code == 0
    assert "removed 1 of a cluster no longer declared" in result.stderr
    assert sorted(p.name for p in (out / "clusters").iterdir()) == [
        "gpu-01.yaml",
        "gpu-02.yaml",
        "gpu-03.yaml",
        "mine.yaml",
    ]
