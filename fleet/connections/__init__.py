"""Connections to workload clusters: one client per cluster, owned by one cache.

`kubeconfig` turns a kubeconfig into TLS settings (pure but for the TLS
context), `client` speaks JSON to one API server, `cache` owns every client
and its health, as Cluster API's ClusterCache does.
"""
