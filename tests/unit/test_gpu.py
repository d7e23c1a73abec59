from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.api import (
    LABEL_GPU_COUNT,
    LABEL_GPU_DRIVER,
    LABEL_GPU_PRODUCT,
    LABEL_MIG_PROFILE,
    LABEL_MIG_STRATEGY,
    LABEL_TIME_SLICING_REPLICAS,
)
from fleet.gpu import (
    MIG_GEOMETRIES,
    declared_gpus,
    declared_offer,
    mig_devices,
    mig_geometry,
    mig_parted_config,
    offer_line,
    reported_offer,
    time_slicing_config,
)

A100 = "NVIDIA-A100-SXM4-80GB"


def labels(**extra: str) -> dict[str, str]:
    return {LABEL_GPU_PRODUCT: A100, LABEL_GPU_COUNT: "16", **extra}


@pytest.mark.parametrize(
    ("product", "smallest"),
    [
        ("NVIDIA-A100-SXM4-80GB", "1g.10gb"),
        ("NVIDIA-A100-PCIE-40GB", "1g.5gb"),
        ("NVIDIA-H100-80GB-HBM3", "1g.10gb"),
        ("NVIDIA-H100-NVL", "1g.12gb"),
        ("NVIDIA-H200", "1g.18gb"),
        ("NVIDIA-A30", "1g.6gb"),
    ],
)
def test_mig_products_and_their_smallest_slice(product, smallest):
    geometry = mig_geometry(product)
    assert geometry is not None
    assert next(iter(geometry.profiles)) == smallest


@pytest.mark.parametrize("product", ["NVIDIA-L40S", "Tesla-T4", "NVIDIA-A1000", "unknown"])
def test_products_without_mig(product):
    assert mig_geometry(product) is None
    with pytest.raises(ValueError, match="does not support MIG"):
        mig_devices(product, "all-1g.10gb")


@given(st.sampled_from(MIG_GEOMETRIES))
def test_every_slice_and_the_balanced_mix_fit_one_gpu(geometry):
    """A GPU has 7 compute slices: no profile and no balanced mix asks for more."""
    for profile, count in geometry.profiles.items():
        assert int(profile.split("g.")[0]) * count <= 7
    used = sum(int(p.split("g.")[0]) * n for p, n in geometry.balanced.items())
    assert used <= 7
    assert set(geometry.balanced) <= set(geometry.profiles)


def test_mig_parted_config_has_the_declared_profile_and_all_disabled():
    config = mig_parted_config(A100, "all-1g.10gb")
    assert config == {
        "version": "v1",
        "mig-configs": {
            "all-disabled": [{"devices": "all", "mig-enabled": False}],
            "all-1g.10gb": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 7}}],
        },
    }


def test_a_profile_the_product_lacks_names_what_it_offers():
    with pytest.raises(ValueError, match=r"'all-1g\.5gb' is not offered by .*all-1g\.10gb"):
        mig_devices(A100, "all-1g.5gb")


def test_time_slicing_config():
    config = time_slicing_config(4)
    assert config["sharing"]["timeSlicing"]["resources"] == [
        {"name": "nvidia.com/gpu", "replicas": 4}
    ]


def test_declarations_read_from_labels():
    assert declared_gpus({}).sharing == "none"
    assert not declared_gpus({}).as_context()["declared"]
    mig = declared_gpus(labels(**{LABEL_MIG_PROFILE: "all-1g.10gb", LABEL_MIG_STRATEGY: "mixed"}))
    assert (mig.sharing, mig.mig_strategy, mig.problems) == ("mig", "mixed", ())
    assert mig.as_context()["mig"]["config"] == mig_parted_config(A100, "all-1g.10gb")
    shared = declared_gpus(labels(**{LABEL_TIME_SLICING_REPLICAS: "4"}))
    assert shared.sharing == "time-slicing"
    assert shared.as_context()["timeSlicing"]["config"] == time_slicing_config(4)
    preinstalled = declared_gpus(labels(**{LABEL_GPU_DRIVER: "preinstalled"}))
    assert preinstalled.as_context()["driver"] == "preinstalled"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({LABEL_MIG_PROFILE: "all-7g.40gb"}, "is not offered by"),
        ({LABEL_MIG_STRATEGY: "both"}, "is not one of single, mixed"),
        ({LABEL_TIME_SLICING_REPLICAS: "0"}, "not a whole number from 1 to 64"),
        ({LABEL_TIME_SLICING_REPLICAS: "four"}, "not a whole number"),
        ({LABEL_GPU_DRIVER: "custom"}, "is not one of managed, preinstalled"),
        (
            {LABEL_MIG_PROFILE: "all-1g.10gb", LABEL_TIME_SLICING_REPLICAS: "2"},
            "declare MIG or time-slicing, not both",
        ),
    ],
)
def test_declarations_that_cannot_be_honoured_carry_their_problem(extra, problem):
    declaration = declared_gpus(labels(**extra))
    assert any(problem in p for p in declaration.problems), declaration.problems
    assert declaration.as_context()["mig"] is None


def test_mig_without_a_product_is_a_problem():
    declaration = declared_gpus({LABEL_MIG_PROFILE: "all-1g.10gb"})
    assert declaration.problems == (
        f"MIG or time-slicing is declared without label {LABEL_GPU_PRODUCT}",
    )


@given(st.dictionaries(st.text(max_size=40), st.text(max_size=70), max_size=8))
def test_any_labels_give_a_declaration_never_an_exception(found):
    declaration = declared_gpus(found)
    declaration.as_context()
    assert isinstance(declared_offer(declaration), str)


def test_offers_as_declared_and_as_reported():
    assert declared_offer(declared_gpus({})) == "-"
    assert declared_offer(declared_gpus(labels())) == "16"
    mig = declared_gpus(labels(**{LABEL_MIG_PROFILE: "all-balanced"}))
    assert declared_offer(mig) == "32x1g.10gb + 16x2g.20gb + 16x3g.40gb"
    shared = declared_gpus(labels(**{LABEL_TIME_SLICING_REPLICAS: "4"}))
    assert declared_offer(shared) == "16x4 shared"
    assert declared_offer(declared_gpus(labels(**{LABEL_MIG_STRATEGY: "x"}))).endswith(
        "(declaration invalid)"
    )
    assert reported_offer({}) == ""
    assert reported_offer({"gpus": 16}) == "16"
    assert reported_offer({"gpus": 64, "gpuReplicas": 4}) == "16x4 shared"
    assert reported_offer({"gpus": 0, "migSlices": {"1g.10gb": 112}}) == "112x1g.10gb"
    assert offer_line("16", "16") == "16"
    assert offer_line("16", "") == "16"
    assert offer_line("-", "8") == "8 (undeclared)"
    assert offer_line("112x1g.10gb", "16") == "112x1g.10gb (nodes: 16)"
