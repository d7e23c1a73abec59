"""Light reads of the management cluster, for commands that must start fast.

`fleet status` needs three reads and nothing else; the Kubernetes client
package costs about half a second to import and the controller (kopf) several,
so these modules speak JSON over HTTPS with the standard library alone.
"""

from fleet.errors import FleetError


class ReadError(FleetError):
    """The management cluster could not be read; the message says where and why."""
