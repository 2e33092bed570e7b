"""Prometheus metrics of one node process, in a registry of its own (tests run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgenode_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgenode_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.query_duration = Histogram(
            "edgenode_query_duration_seconds",
            "Time spent in the database per request kind",
            ["kind"],
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
            registry=self.registry,
        )
        self.db_size = Gauge("edgenode_db_size_bytes", "Size of the database file", registry=self.registry)
        self.wal_size = Gauge("edgenode_wal_size_bytes", "Size of the database's WAL file", registry=self.registry)
        self.hrana_requests = Counter(
            "edgenode_hrana_requests", "Hrana requests by endpoint", ["endpoint"], registry=self.registry
        )
        self.hrana_errors = Counter("edgenode_hrana_errors", "Hrana errors by code", ["code"], registry=self.registry)
