import pytest

from fleet.api.models import InvalidSpec, parse_addon, parse_profile


def profile(spec):
    return {"kind": "AddonProfile", "metadata": {"name": "gpu", "namespace": "team"}, "spec": spec}


def test_profile_defaults():
    parsed = parse_profile(profile({"addons": [{"name": "cache"}]}))
    assert (parsed.sync_mode, parsed.cleanup_policy, parsed.drift_seconds) == (
        "Continuous",
        "Delete",
        180,
    )
    assert parsed.addons[0].values == {}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"addons": [{"name": "a", "dependsOn": ["b"]}]},
            "AddonProfile team/gpu: add-on 'a' depends on 'b', which is not in spec.addons",
        ),
        (
            {"addons": [{"name": 3}]},
            "AddonProfile team/gpu: spec.addons[0].name must be a str, got 3",
        ),
        (
            {"addons": [], "syncMode": "Sometimes"},
            "AddonProfile team/gpu: spec.syncMode must be one of Continuous, OneTime, DryRun",
        ),
        (
            {"addons": [{"name": "a", "values": []}]},
            "AddonProfile team/gpu: spec.addons[0].values must be a dict, got []",
        ),
    ],
)
def test_bad_profiles_name_the_field(spec, message):
    with pytest.raises(InvalidSpec) as error:
        parse_profile(profile(spec))
    assert str(error.value) == message


def test_bad_addon_kind_is_named():
    with pytest.raises(InvalidSpec, match=r"spec\.kind must be one of manifests, helm"):
        parse_addon(
            {
                "kind": "Addon",
                "metadata": {"name": "x", "namespace": "n"},
                "spec": {"kind": "kustomize"},
            }
        )
