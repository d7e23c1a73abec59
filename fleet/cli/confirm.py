"""`fleet confirm-removal`: let a guarded removal of add-ons go ahead.

The controller holds back a change that would remove add-ons from many
clusters at once and records it in the profile's `status.pendingRemoval`.
Confirming writes its token to the profile's annotation
`fleet.mlops.dev/confirm-removal`; a token names exactly one set of
clusters, so a later, different removal waits again.
"""

from __future__ import annotations

import click

from fleet.api import CONFIRM_REMOVAL_ANNOTATION, GROUP, VERSION
from fleet.cli.console import Terminal
from fleet.cli.options import ManagementAccess, management_options


@click.command("confirm-removal")
@management_options
@click.option(
    "-n", "--namespace", default="default", show_default=True, help="The profile's namespace."
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask; confirm at once (for scripts).")
@click.argument("profile")
@click.pass_obj
def confirm_removal(
    terminal: Terminal, management: ManagementAccess, namespace: str, yes: bool, profile: str
) -> None:
    """Confirm the removal of add-ons that PROFILE holds back for a human."""
    from kubernetes import client as k8s

    custom = k8s.CustomObjectsApi(management.client())
    try:
        body = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "addonprofiles", profile
        )
    except k8s.ApiException as error:
        terminal.abort(f"cannot read AddonProfile {namespace}/{profile}: {error.reason}")
    pending = (body.get("status") or {}).get("pendingRemoval")
    if not pending:
        terminal.abort(f"AddonProfile {namespace}/{profile} holds back no removal")
    clusters = pending.get("clusters") or []
    terminal.print(f"Removing the add-ons of {namespace}/{profile} from {len(clusters)} clusters:")
    terminal.print("  " + ", ".join(clusters))
    if not yes and not click.confirm("Go ahead?", default=False):
        terminal.abort("not confirmed; nothing changed")
    patch = {"metadata": {"annotations": {CONFIRM_REMOVAL_ANNOTATION: pending["token"]}}}
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "addonprofiles", profile, patch
    )
    terminal.print(f"confirmed ({CONFIRM_REMOVAL_ANNOTATION}={pending['token']})")
