"""Prometheus metrics of the replica, as one collector the node's registry can take.

The metric objects are created without a registry (several nodes run in one test process); the
`ReplicaCollector` yields them, so `registry.register(db.collector)` exposes all of them at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class ReplicaMetrics:
    def __init__(self, lag: Callable[[], float | None], generation: Callable[[], int | None]) -> None:
        self.syncs = Counter("edgenode_replica_syncs", "Replica syncs that completed", registry=None)
        self.sync_errors = Counter("edgenode_replica_sync_errors", "Replica syncs that failed", registry=None)
        self.sync_duration = Histogram(
            "edgenode_replica_sync_duration_seconds",
            "Duration of one replica sync",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=None,
        )
        self.frames_applied = Counter(
            "edgenode_replica_frames_applied", "WAL frames applied to the replica by syncs", registry=None
        )
        self.resyncs = Counter(
            "edgenode_replica_resyncs", "Replica wiped and bootstrapped again, by reason", ["reason"], registry=None
        )
        self.bootstrap_bytes = Counter(
            "edgenode_replica_bootstrap_bytes", "Bytes downloaded to bootstrap the replica", registry=None
        )
        self.writes = Counter(
            "edgenode_replica_writes",
            "Writes sent to the primary (forward) or queued (local-first), by outcome",
            ["outcome"],
            registry=None,
        )
        self.ryw_timeouts = Counter(
            "edgenode_replica_read_your_writes_timeouts",
            "Writes committed on the primary that the replica could not reach before answering",
            registry=None,
        )
        self.outbox_decisions = Counter(
            "edgenode_outbox_decisions",
            "Local-first writes the primary decided (applied, rejected) or left undecided, per push",
            ["outcome"],
            registry=None,
        )
        self.outbox_pending = Gauge(
            "edgenode_outbox_pending", "Local-first writes queued and not yet decided by the primary", registry=None
        )
        self.outbox_conflicts = Gauge(
            "edgenode_outbox_conflicts", "Local-first writes the primary refused, kept for an operator", registry=None
        )
        self.generation = Gauge("edgenode_replica_generation", "Generation the replica is in", registry=None)
        self.generation.set_function(lambda: float(generation() or 0))
        self.lag = Gauge(
            "edgenode_replica_lag_seconds",
            "Seconds since the start of the last sync that caught up with the primary (-1: never)",
            registry=None,
        )
        self.lag.set_function(lambda: -1.0 if (value := lag()) is None else value)
        self.collector = ReplicaCollector(self)


class ReplicaCollector(Collector):
    def __init__(self, metrics: ReplicaMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        for metric in (
            m.syncs,
            m.sync_errors,
            m.sync_duration,
            m.frames_applied,
            m.resyncs,
            m.bootstrap_bytes,
            m.writes,
            m.ryw_timeouts,
            m.outbox_decisions,
            m.outbox_pending,
            m.outbox_conflicts,
            m.generation,
            m.lag,
        ):
            yield from metric.collect()
