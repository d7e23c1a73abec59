from __future__ import annotations

import base64
import copy
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.webhook.catalogue import Rejected
from fleet.webhook.credentials import inject_credentials, validate_secret

ACCESS_KEY = "AKIAEXAMPLEKEY000001"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # noqa: S105 (AWS docs example)
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----\n"
SERVICE_ACCOUNT = {
    "type": "service_account",
    "project_id": "ml",
    "client_email": "trainer@ml.iam.gserviceaccount.com",
    "private_key": PRIVATE_KEY,
}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(kind: str, data: dict | None = None, string_data: dict | None = None) -> dict:
    body: dict = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cloud", "namespace": "team-a"},
        "type": kind,
    }
    if data is not None:
        body["data"] = data
    if string_data is not None:
        body["stringData"] = string_data
    return body


AWS = "fleet.mlops.dev/aws-credentials"
GCP = "fleet.mlops.dev/gcp-credentials"


def refusal(body: dict) -> str:
    with pytest.raises(Rejected) as refused:
        validate_secret(body)
    message = refused.value.message
    for value in (ACCESS_KEY, SECRET_KEY, PRIVATE_KEY, "MIIEvQ", "trainer@"):
        assert value not in message
    return message


# validate_secret


@pytest.mark.parametrize(
    "body",
    [
        secret(
            AWS,
            data={"aws_access_key_id": b64(ACCESS_KEY), "aws_secret_access_key": b64(SECRET_KEY)},
        ),
        secret(
            AWS,
            string_data={
                "aws_access_key_id": ACCESS_KEY,
                "aws_secret_access_key": SECRET_KEY,
                "aws_session_token": "token",
                "region": "eu-west-1",
            },
        ),
        secret(
            AWS,
            data={"aws_access_key_id": b64(ACCESS_KEY)},
            string_data={"aws_secret_access_key": SECRET_KEY},
        ),
        secret(GCP, data={"credentials.json": b64(json.dumps(SERVICE_ACCOUNT))}),
        secret(GCP, string_data={"credentials.json": json.dumps(SERVICE_ACCOUNT), "notes": "x"}),
        secret("Opaque", data={"anything": "not base64 at all!"}),
        {"kind": "Secret", "metadata": {"name": "untyped"}},
    ],
)
def test_good_and_foreign_secrets_pass(body):
    validate_secret(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            secret(AWS, string_data={"aws_access_key_id": ACCESS_KEY}),
            "Secret team-a/cloud: missing key 'aws_secret_access_key'",
        ),
        (
            secret(AWS, data={}),
            "Secret team-a/cloud: missing keys 'aws_access_key_id', 'aws_secret_access_key'",
        ),
        (
            secret(
                AWS,
                string_data={
                    "aws_access_key_id": ACCESS_KEY,
                    "aws_secret_access_key": SECRET_KEY,
                    "aws_secret_key": SECRET_KEY,
                    "AWS_REGION": "eu-west-1",
                },
            ),
            "Secret team-a/cloud: unknown keys 'AWS_REGION', 'aws_secret_key'; "
            "a fleet.mlops.dev/aws-credentials Secret holds aws_access_key_id, "
            "aws_secret_access_key and optionally aws_session_token, region",
        ),
        (
            secret(
                AWS,
                data={
                    "aws_access_key_id": b64(ACCESS_KEY),
                    "aws_secret_access_key": SECRET_KEY + "!",
                },
            ),
            "Secret team-a/cloud: data key 'aws_secret_access_key' is not base64",
        ),
        (
            secret(
                AWS,
                data={"aws_access_key_id": b64(ACCESS_KEY + "\n")},
                string_data={"aws_secret_access_key": SECRET_KEY},
            ),
            "Secret team-a/cloud: key 'aws_access_key_id' starts or ends with whitespace",
        ),
        (
            secret(AWS, string_data={"aws_access_key_id": "", "aws_secret_access_key": SECRET_KEY}),
            "Secret team-a/cloud: key 'aws_access_key_id' is empty",
        ),
        (
            secret(GCP, string_data={"key.json": json.dumps(SERVICE_ACCOUNT)}),
            "Secret team-a/cloud: missing key 'credentials.json' (a service account key file)",
        ),
        (
            secret(GCP, string_data={"credentials.json": PRIVATE_KEY}),
            "Secret team-a/cloud: key 'credentials.json' is not JSON",
        ),
        (
            secret(GCP, data={"credentials.json": base64.b64encode(b"\xff\xfe").decode()}),
            "Secret team-a/cloud: key 'credentials.json' is not UTF-8 text",
        ),
        (
            secret(
                GCP,
                string_data={
                    "credentials.json": json.dumps({**SERVICE_ACCOUNT, "type": "authorized_user"})
                },
            ),
            "Secret team-a/cloud: key 'credentials.json' is not a service account key "
            '(a JSON object with "type": "service_account")',
        ),
        (
            secret(
                GCP,
                string_data={
                    "credentials.json": json.dumps(
                        {"type": "service_account", "client_email": "", "private_key": 7}
                    )
                },
            ),
            "Secret team-a/cloud: key 'credentials.json' has no client_email or private_key",
        ),
    ],
)
def test_bad_credential_secrets_are_refused_without_their_values(body, message):
    assert refusal(body) == message


def test_string_data_is_read_over_data():
    body = secret(
        AWS,
        data={"aws_access_key_id": b64(""), "aws_secret_access_key": b64(SECRET_KEY)},
        string_data={"aws_access_key_id": ACCESS_KEY},
    )
    validate_secret(body)


def test_a_secret_without_a_namespace_or_name_is_still_named():
    body = secret(AWS, data={})
    body["metadata"] = {"generateName": "cloud-"}
    assert refusal(body).startswith("Secret cloud-*: missing keys")


# inject_credentials


def pod(annotations: dict[str, str] | None, **spec: object) -> dict:
    return {
        "metadata": {"name": "train", "namespace": "team-a", "annotations": annotations},
        "spec": {"containers": [{"name": "train", "image": "t:1"}], **spec},
    }


def aws_env(name: str = "cloud") -> list[dict]:
    def ref(key: str, optional: bool = False) -> dict:
        found: dict = {"name": name, "key": key}
        if optional:
            found["optional"] = True
        return {"secretKeyRef": found}

    return [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": ref("aws_access_key_id")},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": ref("aws_secret_access_key")},
        {"name": "AWS_SESSION_TOKEN", "valueFrom": ref("aws_session_token", optional=True)},
        {"name": "AWS_REGION", "valueFrom": ref("region", optional=True)},
    ]


GCP_PATH = "/var/run/secrets/fleet.mlops.dev/gcp"


def test_aws_credentials_reach_every_container_by_reference():
    given_pod = pod(
        {"credentials.fleet.mlops.dev/aws": "cloud"},
        initContainers=[{"name": "fetch", "image": "f:1"}],
    )
    assert inject_credentials(given_pod) == {
        "metadata": given_pod["metadata"],
        "spec": {
            "containers": [{"name": "train", "image": "t:1", "env": aws_env()}],
            "initContainers": [{"name": "fetch", "image": "f:1", "env": aws_env()}],
        },
    }


def test_gcp_credentials_are_a_mounted_file():
    given_pod = pod({"credentials.fleet.mlops.dev/gcp": " gcs.reader "})
    assert inject_credentials(given_pod)["spec"] == {
        "containers": [
            {
                "name": "train",
                "image": "t:1",
                "volumeMounts": [
                    {"name": "fleet-gcp-credentials", "mountPath": GCP_PATH, "readOnly": True}
                ],
                "env": [
                    {
                        "name": "GOOGLE_APPLICATION_CREDENTIALS",
                        "value": f"{GCP_PATH}/credentials.json",
                    }
                ],
            }
        ],
        "volumes": [
            {
                "name": "fleet-gcp-credentials",
                "secret": {
                    "secretName": "gcs.reader",
                    "items": [{"key": "credentials.json", "path": "credentials.json"}],
                    "defaultMode": 420,
                },
            }
        ],
    }


def test_the_authors_environment_wins():
    mine = [{"name": "AWS_REGION", "value": "us-east-1"}]
    given_pod = pod(
        {"credentials.fleet.mlops.dev/aws": "cloud"},
        containers=[{"name": "train", "env": copy.deepcopy(mine)}],
    )
    env = inject_credentials(given_pod)["spec"]["containers"][0]["env"]
    assert env == [*mine, *(e for e in aws_env() if e["name"] != "AWS_REGION")]


@pytest.mark.parametrize("name", ["Cloud", "", "a_b", "x" * 254, "-cloud"])
def test_a_bad_secret_name_is_refused(name):
    with pytest.raises(Rejected, match="is not a Secret name"):
        inject_credentials(pod({"credentials.fleet.mlops.dev/gcp": name}))


def test_another_volume_or_mount_in_fleets_place_is_refused():
    taken = pod(
        {"credentials.fleet.mlops.dev/gcp": "cloud"},
        volumes=[{"name": "fleet-gcp-credentials", "emptyDir": {}}],
    )
    with pytest.raises(Rejected) as refused:
        inject_credentials(taken)
    assert refused.value.message == (
        "the pod already has a volume named 'fleet-gcp-credentials', "
        "and it is not the one fleet adds for the GCP credentials of Secret 'cloud'"
    )
    mounted = pod(
        {"credentials.fleet.mlops.dev/gcp": "cloud"},
        containers=[{"name": "train", "volumeMounts": [{"name": "x", "mountPath": GCP_PATH}]}],
    )
    with pytest.raises(Rejected, match="container 'train' already mounts volume 'x'"):
        inject_credentials(mounted)


def test_a_secret_renamed_in_the_annotation_is_a_conflict_not_a_second_volume():
    once = inject_credentials(pod({"credentials.fleet.mlops.dev/gcp": "old"}))
    once["metadata"]["annotations"]["credentials.fleet.mlops.dev/gcp"] = "new"
    with pytest.raises(Rejected, match="volume named 'fleet-gcp-credentials'"):
        inject_credentials(once)


@pytest.mark.parametrize("annotations", [None, {}, {"credentials.fleet.mlops.dev/azure": "x"}])
def test_a_pod_without_credentials_comes_back_unchanged_as_a_copy(annotations):
    given_pod = pod(annotations)
    result = inject_credentials(given_pod)
    assert result == given_pod
    assert result is not given_pod


CONTAINER_NAMES = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, unique=True)
AUTHOR_ENV = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["AWS_REGION", "GOOGLE_APPLICATION_CREDENTIALS", "HOME"]),
            "value": st.just("mine"),
        }
    ),
    max_size=2,
    unique_by=lambda e: e["name"],
)


@st.composite
def credential_pods(draw: st.DrawFn) -> dict:
    annotations = {}
    if draw(st.booleans()):
        annotations["credentials.fleet.mlops.dev/aws"] = draw(st.sampled_from(["aws", "s3.rw"]))
    if draw(st.booleans()):
        annotations["credentials.fleet.mlops.dev/gcp"] = draw(st.sampled_from(["gcp", "gcs"]))
    containers = [{"name": n, "env": draw(AUTHOR_ENV)} for n in draw(CONTAINER_NAMES)]
    spec: dict = {"containers": containers}
    if draw(st.booleans()):
        spec["initContainers"] = [{"name": "init"}]
    return {"metadata": {"annotations": annotations}, "spec": spec}


@given(credential_pods())
def test_injecting_twice_changes_nothing_more_and_leaves_the_input_alone(given_pod):
    before = copy.deepcopy(given_pod)
    once = inject_credentials(given_pod)
    assert given_pod == before
    assert inject_credentials(once) == once


@given(credential_pods())
def test_no_literal_credential_and_the_authors_values_kept(given_pod):
    result = inject_credentials(given_pod)
    spec = result["spec"]
    for before, after in zip(
        [*given_pod["spec"].get("initContainers", []), *given_pod["spec"]["containers"]],
        [*spec.get("initContainers", []), *spec["containers"]],
        strict=True,
    ):
        mine = before.get("env") or []
        env = after.get("env") or []
        assert env[: len(mine)] == mine
        for added in env[len(mine) :]:
            assert "value" not in added or added["name"] == "GOOGLE_APPLICATION_CREDENTIALS"
        names = [e["name"] for e in env]
        assert len(names) == len(set(names))
        annotations = given_pod["metadata"]["annotations"]
        if "credentials.fleet.mlops.dev/aws" in annotations:
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= set(names)
        if "credentials.fleet.mlops.dev/gcp" in annotations:
            assert after["volumeMounts"][-1]["mountPath"] == GCP_PATH
