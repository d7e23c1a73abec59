"""One replica acts: leader election with a coordination.k8s.io Lease.

The `kubernetes` client's LeaderElection does the election; this module
only sets it up. A standby waits in `acquire` and touches nothing; the
leader renews the Lease every few seconds; a leader that cannot renew
within the deadline exits at once (as controller-runtime does), so that two
replicas never act together, and its Deployment restarts it as a standby.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from kubernetes import client as k8s
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from fleet.api import install

log = logging.getLogger("fleet.controller")
LEASE_NAME = install.NAME
# A new leader takes over within LEASE_SECONDS of the old one dying; idle, the
# leader sends two requests (read, renew) every RETRY_SECONDS.
LEASE_SECONDS = 15
RENEW_DEADLINE_SECONDS = 10
RETRY_SECONDS = 4


def identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def wait_for_leadership(api: k8s.ApiClient, namespace: str, me: str) -> None:
    """Block until this process leads; from then on, renew in the background or exit."""
    k8s.Configuration.set_default(api.configuration)
    leading = threading.Event()

    def lost() -> None:
        log.error(
            "lost the leader Lease %s/%s: exiting so that one replica acts", namespace, LEASE_NAME
        )
        os._exit(1)

    config = electionconfig.Config(
        LeaseLock(LEASE_NAME, namespace, me),
        lease_duration=LEASE_SECONDS,
        renew_deadline=RENEW_DEADLINE_SECONDS,
        retry_period=RETRY_SECONDS,
        onstarted_leading=leading.set,
        onstopped_leading=lost,
    )
    logging.getLogger("leaderelection").setLevel(logging.WARNING)
    election = leaderelection.LeaderElection(config)
    threading.Thread(target=election.run, name="leader-election", daemon=True).start()
    leading.wait()
    log.info("leading as %s (Lease %s/%s)", me, namespace, LEASE_NAME)


def release(api: k8s.ApiClient, namespace: str, me: str) -> None:
    """On a clean stop, hand the Lease back so that a standby need not wait for it to expire."""
    leases = k8s.CoordinationV1Api(api)
    try:
        lease = leases.read_namespaced_lease(LEASE_NAME, namespace)
        if lease.spec.holder_identity == me:
            # An update of what was read: refused (409) if another replica took it meanwhile,
            # and within the Role's verbs (get, create, update).
            lease.spec.holder_identity = None
            leases.replace_namespaced_lease(LEASE_NAME, namespace, lease)
    except (k8s.ApiException, OSError) as error:
        log.warning("could not release the Lease %s/%s: %s", namespace, LEASE_NAME, error)
