import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.devenv.topology import GPU_MODELS, MAX_CLUSTERS, plan_fleet
from fleet.errors import DevEnvError


def test_three_clusters_over_two_datacenters():
    plans = plan_fleet(3, 2)
    assert [(p.name, p.datacenter, p.gpu.product) for p in plans] == [
        ("gpu-01", "dc-1", "NVIDIA-H100-80GB-HBM3"),
        ("gpu-02", "dc-2", "NVIDIA-A100-SXM4-80GB"),
        ("gpu-03", "dc-1", "NVIDIA-L40S"),
    ]
    assert [p.node_names for p in plans][1] == (
        "gpu-02-gpu-0",
        "gpu-02-gpu-1",
        "gpu-02-gpu-2",
        "gpu-02-cpu-0",
    )
    assert plans[1].gpu_count == 24


@given(clusters=st.integers(1, MAX_CLUSTERS), datacenters=st.integers(1, 10))
def test_every_datacenter_gets_a_cluster_and_names_are_unique(clusters, datacenters):
    if datacenters > clusters:
        with pytest.raises(DevEnvError, match="every datacenter needs at least one cluster"):
            plan_fleet(clusters, datacenters)
        return
    plans = plan_fleet(clusters, datacenters)
    assert len({p.name for p in plans}) == clusters
    assert {p.datacenter for p in plans} == {f"dc-{i + 1}" for i in range(datacenters)}
    assert {p.gpu for p in plans} <= set(GPU_MODELS)
    assert all(p.gpu_nodes >= 2 and p.cpu_nodes >= 1 for p in plans)


@pytest.mark.parametrize(
    ("clusters", "datacenters", "message"),
    [
        (0, 1, "--clusters must be between 1 and 50, got 0"),
        (51, 1, "--clusters must be between 1 and 50, got 51"),
        (2, 0, "--datacenters must be between 1 and 10, got 0"),
    ],
)
def test_out_of_range_sizes_are_refused(clusters, datacenters, message):
    with pytest.raises(DevEnvError) as error:
        plan_fleet(clusters, datacenters)
    assert str(error.value) == message
