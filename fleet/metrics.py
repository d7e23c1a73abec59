"""Prometheus metrics of the controller.

Low cardinality by design: phases and results as label values; the cluster
appears as a label only where it is the point (reachability), never as part
of a metric name.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PHASES = ("Pending", "Applying", "Ready", "Degraded", "Failed", "Unreachable", "Deleting")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconcile_seconds = Histogram(
            "fleet_reconcile_duration_seconds",
            "Time to reconcile one AddonDeployment.",
            ["result"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.deployments = Gauge(
            "fleet_addondeployments",
            "AddonDeployments by phase.",
            ["phase"],
            registry=self.registry,
        )
        self.objects_applied = Counter(
            "fleet_objects_applied_total",
            "Objects server-side applied to workload clusters.",
            registry=self.registry,
        )
        self.objects_pruned = Counter(
            "fleet_objects_pruned_total",
            "Objects pruned because they were no longer rendered.",
            registry=self.registry,
        )
        self.drift_corrections = Counter(
            "fleet_drift_corrections_total",
            "Objects found drifted and applied again.",
            registry=self.registry,
        )
        self.errors = Counter(
            "fleet_reconcile_errors_total",
            "Reconciles that ended in error.",
            ["kind"],
            registry=self.registry,
        )
        self.cluster_reachable = Gauge(
            "fleet_cluster_reachable",
            "1 when the workload cluster's API answered last time.",
            ["namespace", "cluster"],
            registry=self.registry,
        )

        self.cluster_gpus = Gauge(
            "fleet_cluster_gpus",
            "GPUs the workload cluster's nodes report, by product (as last read).",
            ["namespace", "cluster", "datacenter", "product"],
            registry=self.registry,
        )
        self._gpus_counted: dict[tuple[str, str, str, str], int] = {}

        self.watched_clusters = Gauge(
            "fleet_watched_clusters",
            "Workload clusters whose watches all stream (drift shows as events there).",
            registry=self.registry,
        )
        self.watch_events = Counter(
            "fleet_watch_events_total",
            "Changes seen by the workload-cluster watches that woke a deployment.",
            registry=self.registry,
        )
        self.watch_fetches = Counter(
            "fleet_watch_fetches_total",
            "GETs (the periodic look at a watched cluster's nodes) sent over its watches' "
            "connection.",
            registry=self.registry,
        )
        self.watches_lost = Counter(
            "fleet_watches_lost_total",
            "Workload-cluster watches that broke or lost their history.",
            registry=self.registry,
        )
        self.model_bytes = Counter(
            "fleet_model_bytes_total",
            "Bytes of model artifacts per datacenter registry: sent into it, skipped (held "
            "already or mounted), resumed (held from an interrupted copy).",
            ["datacenter", "fate"],
            registry=self.registry,
        )
        self.model_copies = Counter(
            "fleet_model_copies_total",
            "Finished copies of a model artifact into a datacenter registry, by result.",
            ["datacenter", "result"],
            registry=self.registry,
        )
        self.model_copy_seconds = Histogram(
            "fleet_model_copy_seconds",
            "How long a successful copy into a datacenter registry took.",
            ["datacenter"],
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
            registry=self.registry,
        )

    def count_gpus(self, found: dict[tuple[str, str, str, str], int]) -> None:
        """Every cluster's GPUs, keyed (namespace, cluster, datacenter, product); clusters
        gone since the last count drop out. Only what changed is touched: looking up a
        labelled child costs enough to matter at 1,000 clusters every 10 s."""
        for labels in self._gpus_counted.keys() - found.keys():
            self.cluster_gpus.remove(*labels)
        for labels, count in found.items():
            if self._gpus_counted.get(labels) != count:
                self.cluster_gpus.labels(*labels).set(count)
        self._gpus_counted = dict(found)

    def applied(self, applied: int, pruned: int) -> None:
        self.objects_applied.inc(applied)
        self.objects_pruned.inc(pruned)

    def drift_corrected(self, count: int) -> None:
        self.drift_corrections.inc(count)

    def reachable(self, namespace: str, cluster: str, up: bool) -> None:
        self.cluster_reachable.labels(namespace, cluster).set(1 if up else 0)

    def count_phases(self, phases: list[str]) -> None:
        tally = Tally(phases)
        for phase in PHASES:
            self.deployments.labels(phase).set(tally.get(phase, 0))
