"""Which changes to an applied object a deployment must look at.

A watch of what fleet applied delivers every write to those objects: fleet's own
applies, and status updates by the cluster's controllers, far more than anything
else. Only three kinds of change need a pass of the deployment: the object went,
someone changed a field fleet set (the fingerprint of fleet's managed fields moved
away from the one recorded after fleet's apply), or its health changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.health import RULES, health
from fleet.plan import fingerprint

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the last pass of the deployment knew of one object."""

    fingerprint: str | None
    # The health state it judged the object in (None: not judged yet).
    health: str | None


def matters(event_type: str, body: JSON, recorded: Recorded) -> bool:
    """Whether a watch event on an object fleet applied calls for a look at it.

    An object fleet does not know is being applied right now (the apply records it), was
    just pruned by fleet, or was applied by a process that has since restarted (whose
    first pass checks everything): none of them needs a look.
    """
    if recorded.fingerprint is None:
        return False
    if event_type == "DELETED":
        return True
    if fingerprint(body) != recorded.fingerprint:
        return True
    if recorded.health is None or body.get("kind") not in RULES:
        return False
    return health(body).state != recorded.health
