"""Exact output and exit codes of `fleet dev` where no fleet is needed."""

from click.testing import CliRunner

from fleet.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_lists_the_dev_commands():
    result = run("dev", "--help")
    assert result.exit_code == 0
    for command in ("build", "up", "down", "kubeconfig"):
        assert f"  {command} " in result.output


def test_more_datacenters_than_clusters_is_refused_before_building(tmp_path):
    result = run("dev", "up", "--clusters", "1", "--datacenters", "2", "--state-dir", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr == (
        "error: --datacenters (2) is more than --clusters (1): "
        "every datacenter needs at least one cluster\n"
    )


def test_out_of_range_clusters_is_a_usage_error(tmp_path):
    result = run("dev", "up", "--clusters", "0", "--state-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "Invalid value for '--clusters': 0 is not in the range 1<=x<=50." in result.stderr


def test_kubeconfig_without_a_fleet_says_how_to_start_one(tmp_path):
    result = run("dev", "kubeconfig", "--state-dir", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: no local fleet is running from {tmp_path}; start one with `fleet dev up`\n"
    )


def test_down_without_a_fleet_is_a_no_op(tmp_path):
    result = run("dev", "down", "--state-dir", str(tmp_path / "none"))
    assert result.exit_code == 0
    assert result.output == f"no local fleet in {tmp_path / 'none'}; nothing to stop\n"
