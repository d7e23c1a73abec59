"""`fleet webhook`: serve the admission webhooks of the `webhooks` add-on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from fleet.cli.console import Terminal
from fleet.cli.serving import address as serving_address
from fleet.cli.serving import api_client, serve_metrics
from fleet.errors import FleetError
from fleet.webhook.mutate import ModelPolicy
from fleet.webhook.server import (
    Bundles,
    Catalogue,
    Certificates,
    Metrics,
    Webhook,
    clients,
    image_volumes_supported,
    serve,
)
from fleet.webhook.sharing import SharingPolicy, parse_sharing_policy

ALL_ADDRESSES = "0.0.0.0"  # noqa: S104 (a pod serves on its own address)


@click.command()
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Kubeconfig of the workload cluster (default: in-cluster, then $KUBECONFIG).",
)
@click.option("--address", default="0.0.0.0:9443", show_default=True, help="Where HTTPS is served.")
@click.option(
    "--cert-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/run/fleet-webhook/certs"),
    show_default=True,
    help="tls.crt, tls.key and ca.crt; reloaded when they change.",
)
@click.option(
    "--make-certificate/--no-make-certificate",
    default=True,
    show_default=True,
    help="Make a CA and serving certificate in --cert-dir when missing or expiring "
    "(off: use the files as given, e.g. from cert-manager).",
)
@click.option(
    "--cert-secret",
    metavar="NAMESPACE/NAME",
    help="Keep the made certificate in this Secret, shared by every replica "
    "(it must exist; the add-on makes it empty).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    default=("fleet-webhook.fleet-webhook.svc",),
    show_default=True,
    help="Names (DNS or IP) the made certificate is for (repeatable).",
)
@click.option(
    "--mutating-configuration",
    default="fleet-webhook",
    show_default=True,
    help="MutatingWebhookConfiguration whose caBundle is kept current ('' for none).",
)
@click.option(
    "--validating-configuration",
    default="fleet-webhook",
    show_default=True,
    help="ValidatingWebhookConfiguration whose caBundle is kept current ('' for none).",
)
@click.option(
    "--cache-root",
    default=ModelPolicy().cache_root,
    show_default=True,
    help="The model-cache agents' directory on each node.",
)
@click.option(
    "--mount-root",
    default=ModelPolicy().mount_root,
    show_default=True,
    help="Where models are mounted in containers (<root>/<model>).",
)
@click.option(
    "--claim",
    default="",
    help="Shared-volume mode: mount models as subPaths of this ReadWriteMany claim of the "
    "pod's namespace (filled by `fleet agent fill`) instead of the node cache.",
)
@click.option(
    "--image-volumes",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Allow models.fleet.mlops.dev/source: image (auto: Kubernetes 1.35 or later).",
)
@click.option(
    "--sharing-policy",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML with priorityClassName and tolerations for interactive GPU pods.",
)
@click.option(
    "--metrics-address",
    default="0.0.0.0:9090",
    show_default=True,
    help="Where /metrics is served (plain HTTP; '' for none).",
)
@click.pass_obj
def webhook(
    terminal: Terminal,
    kubeconfig: Path | None,
    address: str,
    cert_dir: Path,
    make_certificate: bool,
    cert_secret: str | None,
    hosts: tuple[str, ...],
    mutating_configuration: str,
    validating_configuration: str,
    cache_root: str,
    mount_root: str,
    claim: str,
    image_volumes: str,
    sharing_policy: Path | None,
    metrics_address: str,
) -> None:
    """Serve fleet's admission webhooks: model mounts, cloud credentials, GPU sharing.

    \b
    /mutate/pods         pods annotated models.fleet.mlops.dev/use get read-only mounts
                         of the node cache, MODEL_PATH / MODEL_<NAME>_PATH and a node
                         affinity; credentials.fleet.mlops.dev/aws|gcp inject a Secret
    /mutate/gpu-sharing  GPU pods of namespaces labelled
                         gpu.fleet.mlops.dev/sharing=interactive get the priority
                         class and tolerations of --sharing-policy
    /validate/secrets    Secrets of type fleet.mlops.dev/aws-credentials or
                         gcp-credentials must carry their keys

    The serving certificate's CA is kept in the caBundle of the two configurations.
    """
    try:
        sharing = (
            parse_sharing_policy(sharing_policy.read_text()) if sharing_policy else SharingPolicy()
        )
        core, admission, version = clients(api_client(kubeconfig))
    except (FleetError, OSError) as error:
        terminal.abort(f"fleet webhook: {error}")
    supported = {"on": True, "off": False}.get(image_volumes, image_volumes_supported(version))
    metrics = Metrics()
    serve_metrics(terminal, metrics.registry, metrics_address, ALL_ADDRESSES)
    hook = Webhook(
        Catalogue(core),
        ModelPolicy(
            cache_root=cache_root,
            mount_root=mount_root,
            image_volumes=supported,
            kubernetes_version=version,
            claim=claim,
        ),
        sharing,
        metrics,
    )
    bundles = Bundles(admission, mutating_configuration, validating_configuration)
    secret = None
    if cert_secret:
        namespace, _, name = cert_secret.partition("/")
        if not namespace or not name:
            terminal.abort(f"--cert-secret {cert_secret!r}: expected NAMESPACE/NAME", code=2)
        secret = (namespace, name)
    certificates = Certificates(cert_dir, list(hosts), make_certificate, core, secret)
    try:
        asyncio.run(
            serve(
                hook,
                bundles,
                certificates,
                address=serving_address(address, ALL_ADDRESSES),
                started=lambda: terminal.progress(
                    f"fleet webhook: serving on https://{address} (Kubernetes {version}, "
                    f"image volumes {'on' if supported else 'off'})"
                ),
            )
        )
    except FleetError as error:
        terminal.abort(f"fleet webhook: {error}")
    except KeyboardInterrupt:
        pass
