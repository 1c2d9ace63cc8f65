"""`GET /metrics`: Prometheus text format (prometheus_client), anyone may
read it, like `/api/v1/health` (docs/server.md "Metrics" lists each series).

Two kinds of numbers:
- from the catalog and the repository, read at scrape time by a custom
  collector over services/metrics.py: the same in every server process
  (jobs by kind and state, per-source points, bytes and lag, up);
- this process's HTTP answers (`strongroom_http_requests_total` by method
  and status code), counted by an ASGI middleware: per process (each
  process is its own scrape target; sum them in PromQL).

Each application has its own registry: nothing global.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations.

from collections.abc import Callable, Iterator

from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.server.guards import Guards
from strongroom.services.metrics import Snapshot

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _CatalogCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        jobs = GaugeMetricFamily(
            "strongroom_jobs", "Jobs in the catalog by kind and state", labels=["kind", "state"]
        )
        for (kind, state), count in sorted(snap.jobs.items()):
            jobs.add_metric([kind, state], count)
        yield jobs
        points = GaugeMetricFamily(
            "strongroom_source_points", "Recovery points of a source", labels=["source"]
        )
        size = GaugeMetricFamily(
            "strongroom_source_bytes",
            "Bytes the newest point of a source protects",
            labels=["source"],
        )
        newest = GaugeMetricFamily(
            "strongroom_source_last_point_timestamp_seconds",
            "Time of the newest point of a source (Unix seconds)",
            labels=["source"],
        )
        lag = GaugeMetricFamily(
            "strongroom_source_lag_seconds",
            "Seconds since the newest point of a source",
            labels=["source"],
        )
        for source, figures in sorted(snap.sources.items()):
            points.add_metric([source], figures.points)
            size.add_metric([source], figures.newest_bytes)
            newest.add_metric([source], figures.newest.timestamp())
            lag.add_metric([source], max(0.0, (snap.at - figures.newest).total_seconds()))
        yield from (points, size, newest, lag)
        up = GaugeMetricFamily(
            "strongroom_up", "1 when the part could be read at this scrape", labels=["part"]
        )
        up.add_metric(["catalog"], int(snap.catalog_up))
        up.add_metric(["repository"], int(snap.repository_up))
        yield up


class _CountAnswers:
    """ASGI middleware: one count per answer, by method and status (a
    request that raised counts as 500)."""

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "")
        method = method if method in _METHODS else "other"
        status = 500

        async def counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            self.counter.labels(method, str(status)).inc()


def add_metrics_routes(app: FastAPI, guards: Guards, snapshot: Callable[[], Snapshot]) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_CatalogCollector(snapshot))
    answers = Counter(
        "strongroom_http_requests",
        "HTTP answers of this server process by method and status code",
        ["method", "code"],
        registry=registry,
    )
    app.add_middleware(_CountAnswers, counter=answers)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
