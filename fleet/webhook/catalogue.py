"""The models a workload cluster offers its pods, as the webhooks read them.

The controller keeps one ConfigMap, `fleet-system/fleet-models`, on every workload
cluster: a key per model, its value a JSON object naming the model's bytes in the
datacenter's registry (`reference`, pinned by `digest`), read by
`fleet.nodecache.parse_assignments`. A node agent labels each node
`model.fleet.mlops.dev/<model>=ready` once the model is on its disk. From that
alone, without calling the API server, the webhooks give a pod the models it asks
for by name.

It also holds what every webhook shares: `Rejected`, the one error that becomes an
`allowed: false` answer, and Kubernetes' name rules.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from fleet.errors import PermanentError
from fleet.nodecache import CATALOGUE_NAME as CATALOGUE_NAME
from fleet.nodecache import CATALOGUE_NAMESPACE as CATALOGUE_NAMESPACE
from fleet.nodecache import READY as READY
from fleet.nodecache import READY_LABEL_PREFIX as READY_LABEL_PREFIX
from fleet.nodecache import ready_label as ready_label

JSON = dict[str, Any]
_SUBDOMAIN_PART = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"^{_SUBDOMAIN_PART}(\.{_SUBDOMAIN_PART})*\Z")


class Rejected(PermanentError):
    """The webhook refuses the object; `message` is what the user is told (never a secret)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Model(Protocol):
    """What a pod's mounts need of a catalogue entry (`fleet.nodecache.Assignment`)."""

    @property
    def name(self) -> str: ...

    @property
    def reference(self) -> str: ...

    @property
    def digest(self) -> str: ...


def is_dns_subdomain(name: str) -> bool:
    return len(name) <= 253 and bool(_SUBDOMAIN.match(name))


def env_name(model: str) -> str:
    """`MODEL_<NAME>_PATH`, NAME upper-cased with every other character an underscore."""
    return f"MODEL_{re.sub(r'[^A-Z0-9]', '_', model.upper())}_PATH"
