"""Cloud credentials for pods, by reference only: fleet's two Secret types and the
pod annotations that point containers at them.

A Secret of type `fleet.mlops.dev/aws-credentials` or `fleet.mlops.dev/gcp-credentials`
is checked when it is written, so that a missing key or a broken service-account
file is refused at `kubectl apply` instead of surfacing later as a pod that cannot
reach its bucket. A pod annotated `credentials.fleet.mlops.dev/aws: <secret>` (or
`gcp`) gets the environment and files the cloud SDKs look for, as references to the
Secret in its own namespace: the webhook never reads it, and no value is ever
written into a pod. Refusals name the Secret and the key, never what a key holds.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Mapping
from typing import Any

from fleet.webhook.catalogue import Rejected, is_dns_subdomain
from fleet.webhook.mutate import add_env, add_mount, add_volume

JSON = dict[str, Any]
AWS_TYPE = "fleet.mlops.dev/aws-credentials"
GCP_TYPE = "fleet.mlops.dev/gcp-credentials"
AWS_ANNOTATION = "credentials.fleet.mlops.dev/aws"
GCP_ANNOTATION = "credentials.fleet.mlops.dev/gcp"
AWS_REQUIRED = ("aws_access_key_id", "aws_secret_access_key")
AWS_OPTIONAL = ("aws_session_token", "region")
# (environment variable, Secret key, optional): optional ones stay unset when the key is absent.
AWS_ENV = (
    ("AWS_ACCESS_KEY_ID", "aws_access_key_id", False),
    ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key", False),
    ("AWS_SESSION_TOKEN", "aws_session_token", True),
    ("AWS_REGION", "region", True),
)
GCP_KEY = "credentials.json"
GCP_FIELDS = ("client_email", "private_key")
GCP_VOLUME = "fleet-gcp-credentials"
GCP_MOUNT = "/var/run/secrets/fleet.mlops.dev/gcp"
GCP_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
# The API server's default mode, written out so that a pod admitted again (defaulted
# in between) still holds exactly the volume we add, not a conflicting one.
SECRET_VOLUME_MODE = 0o644


def validate_secret(secret: JSON) -> None:
    """Refuse a fleet credential Secret without the keys its type needs; other types pass."""
    kind = secret.get("type")
    if kind not in (AWS_TYPE, GCP_TYPE):
        return
    where = f"Secret {_label(secret)}"
    values = _values(secret, where)
    if kind == AWS_TYPE:
        _check_aws(values, where)
    else:
        _check_gcp(values, where)


def inject_credentials(pod: JSON) -> JSON:
    """The pod with the credentials its annotations name, as Secret references in every
    container and init container; a copy of it unchanged when it names none."""
    result = copy.deepcopy(pod)
    annotations = (result.get("metadata") or {}).get("annotations") or {}
    aws, gcp = annotations.get(AWS_ANNOTATION), annotations.get(GCP_ANNOTATION)
    if aws is None and gcp is None:
        return result
    aws_secret = None if aws is None else _secret_name(AWS_ANNOTATION, aws)
    gcp_secret = None if gcp is None else _secret_name(GCP_ANNOTATION, gcp)
    if result.get("spec") is None:
        result["spec"] = {}
    spec = result["spec"]
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    if aws_secret is not None:
        for container in containers:
            for variable, key, optional in AWS_ENV:
                reference: JSON = {"name": aws_secret, "key": key}
                if optional:
                    reference["optional"] = True
                add_env(container, {"name": variable, "valueFrom": {"secretKeyRef": reference}})
    if gcp_secret is not None:
        purpose = f"the GCP credentials of Secret {gcp_secret!r}"
        volume = {
            "name": GCP_VOLUME,
            "secret": {
                "secretName": gcp_secret,
                "items": [{"key": GCP_KEY, "path": GCP_KEY}],
                "defaultMode": SECRET_VOLUME_MODE,
            },
        }
        add_volume(spec, volume, purpose)
        mount = {"name": GCP_VOLUME, "mountPath": GCP_MOUNT, "readOnly": True}
        for container in containers:
            add_mount(container, mount, purpose)
            add_env(container, {"name": GCP_ENV, "value": f"{GCP_MOUNT}/{GCP_KEY}"})
    return result


def _secret_name(annotation: str, text: str) -> str:
    name = text.strip()
    if not is_dns_subdomain(name):
        raise Rejected(
            f"{annotation}: {text!r} is not a Secret name (lower-case letters, digits, "
            "'-' and '.', at most 253 characters)"
        )
    return name


def _label(secret: JSON) -> str:
    meta = secret.get("metadata") or {}
    name = meta.get("name") or f"{meta.get('generateName', '')}*"
    return f"{meta['namespace']}/{name}" if meta.get("namespace") else name


def _values(secret: JSON, where: str) -> dict[str, bytes]:
    """The Secret's keys and bytes: `data` decoded, then `stringData` over it (as the API
    server merges them)."""
    values: dict[str, bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            if not isinstance(value, str):
                raise TypeError
            values[key] = base64.b64decode(value, validate=True)
        except (TypeError, binascii.Error) as error:
            raise Rejected(f"{where}: data key {key!r} is not base64") from error
    for key, value in (secret.get("stringData") or {}).items():
        if not isinstance(value, str):
            raise Rejected(f"{where}: stringData key {key!r} is not a string")
        values[key] = value.encode()
    return values


def _text(values: Mapping[str, bytes], key: str, where: str) -> str:
    try:
        return values[key].decode()
    except UnicodeDecodeError as error:
        raise Rejected(f"{where}: key {key!r} is not UTF-8 text") from error


def _check_aws(values: Mapping[str, bytes], where: str) -> None:
    unknown = sorted(set(values) - {*AWS_REQUIRED, *AWS_OPTIONAL})
    if unknown:
        raise Rejected(
            f"{where}: unknown {_keys(unknown)}; a {AWS_TYPE} Secret holds "
            f"{', '.join(AWS_REQUIRED)} and optionally {', '.join(AWS_OPTIONAL)}"
        )
    missing = [key for key in AWS_REQUIRED if key not in values]
    if missing:
        raise Rejected(f"{where}: missing {_keys(missing)}")
    for key in sorted(values):
        text = _text(values, key, where)
        if key in AWS_REQUIRED and not text:
            raise Rejected(f"{where}: key {key!r} is empty")
        if text != text.strip():
            # Nearly always `echo … | base64`: the SDK would sign with the newline.
            raise Rejected(f"{where}: key {key!r} starts or ends with whitespace")


def _check_gcp(values: Mapping[str, bytes], where: str) -> None:
    if GCP_KEY not in values:
        raise Rejected(f"{where}: missing key {GCP_KEY!r} (a service account key file)")
    try:
        body = json.loads(_text(values, GCP_KEY, where))
    except ValueError as error:
        raise Rejected(f"{where}: key {GCP_KEY!r} is not JSON") from error
    if not isinstance(body, dict) or body.get("type") != "service_account":
        raise Rejected(
            f"{where}: key {GCP_KEY!r} is not a service account key "
            '(a JSON object with "type": "service_account")'
        )
    missing = [f for f in GCP_FIELDS if not isinstance(body.get(f), str) or not body[f]]
    if missing:
        raise Rejected(f"{where}: key {GCP_KEY!r} has no {' or '.join(missing)}")


def _keys(keys: list[str]) -> str:
    return f"key{'s' if len(keys) > 1 else ''} {', '.join(repr(k) for k in keys)}"
