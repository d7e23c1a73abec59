"""What the long-running commands (`controller`, `webhook`, `agent`) share: a Kubernetes
client from the pod's ServiceAccount or a kubeconfig, `host:port` addresses, and
Prometheus /metrics. Imported only by those commands: the client is heavy to import."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from prometheus_client import CollectorRegistry, start_http_server

from fleet.cli.console import Terminal


def api_client(kubeconfig: Path | None, *, pool: int | None = None) -> k8s.ApiClient:
    """The kubeconfig's cluster; without one, the pod's ServiceAccount, then $KUBECONFIG
    or ~/.kube/config. `pool`: connections kept (the default is the client's)."""
    configuration = k8s.Configuration()
    if kubeconfig is not None:
        k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
    if pool is not None:
        configuration.connection_pool_maxsize = pool
    return k8s.ApiClient(configuration)


def address(value: str, default_host: str) -> tuple[str, int]:
    """`host:port` (or `:port`, on `default_host`)."""
    host, _, port = value.rpartition(":")
    return host or default_host, int(port)


def serve_metrics(
    terminal: Terminal, registry: CollectorRegistry, where: str, default_host: str
) -> None:
    """/metrics of `registry` on `where` (nothing when it is empty); a port that cannot be
    had ends the command."""
    if not where:
        return
    host, port = address(where, default_host)
    try:
        start_http_server(port, host, registry=registry)
    except OSError as error:
        terminal.abort(f"cannot serve /metrics on {where}: {error.strerror}")
