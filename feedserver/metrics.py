"""Prometheus metrics of one app, in its own `CollectorRegistry` (no process-wide state).

Label values are bounded: tenants are those of the directory, up to `max_tenants` of them
(their children are made when the tenant is created and removed when it is deleted, so an
unknown tenant can never add a label; the tenants beyond the cap share the children of
`tenant="_other"`), HTTP routes are route templates and methods a fixed set. The fan-out
path records once per event, never once per socket.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import NamedTuple, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .auth import Authenticator
from .errors import Forbidden
from .tenants import Tenant, TenantDirectory

METRICS_PATH = "/metrics"
# The label of the tenants beyond FEED_METRICS_MAX_TENANTS; never a tenant id (ids start
# with a letter or a digit).
OTHER_TENANTS = "_other"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds, from a memory-store publish (tens of microseconds) to a slow Redis or a fan-out
# to tens of thousands of sockets.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
)  # fmt: skip


class _TenantSeries(NamedTuple):
    """The children of one tenant label."""

    label: str
    connections: Gauge
    published: Counter
    delivered: Counter


class FeedMetrics:
    """Every metric the server exports, and one method per thing that happened."""

    def __init__(
        self,
        tenants: TenantDirectory,
        *,
        max_tenants: int = 1000,
        failing: Sequence[CountsFailures] = (),
        engine: CountsDrops | None = None,
    ) -> None:
        """`failing`: what `feed_store_errors` counts the failures of: the event store and
        the rate-limit counters, which share its Redis (a request refused by the counters
        during an outage never reaches the store)."""
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)
        self.connections = Gauge(
            "feed_connections", "Open Socket.IO connections on this node", ["tenant"],
            registry=registry,
        )  # fmt: skip
        self.published_events = Counter(
            "feed_events_published", "Events published through this node", ["tenant"],
            registry=registry,
        )  # fmt: skip
        self.delivered_events = Counter(
            "feed_events_delivered",
            "event_created packets sent by the live fan-out of this node",
            ["tenant"],
            registry=registry,
        )
        self.publish_latency = Histogram(
            "feed_publish_latency_seconds",
            "One publish: validation, rate limit and store append",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.fanout_latency = Histogram(
            "feed_fanout_latency_seconds",
            "Handing one event to every subscriber of its tenant on this node",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.http_requests = Counter(
            "feed_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "feed_http_request_duration_seconds",
            "HTTP request duration by route template (a WebSocket until its handshake is answered)",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rate_limited = Counter(
            "feed_rate_limited",
            "Requests and socket events refused by a rate limit",
            ["transport"],
            registry=registry,
        )
        # Totals their owners keep as plain ints (nothing to pay on their paths), read
        # when scraped.
        registry.register(_OwnedTotals(failing, engine))
        # Children made once per tenant: cheap on the hot path, bounded labels.
        self.max_tenants = max_tenants
        self._series: dict[str, _TenantSeries] = {}  # tenant -> its own, or _other's
        self._own = 0  # tenants with series of their own
        self._other: _TenantSeries | None = None
        for tenant_id in tenants.ids():
            self._add_tenant(tenant_id)
        # First to hear of a new tenant (before its first socket), last of a deletion.
        tenants.on_change(self.tenant_changed)
        for transport in ("http", "socket"):
            self.rate_limited.labels(transport)
        # Per request, publish and fan-out, counts wait in plain numbers until the next
        # scrape (`_Tallies`): prometheus_client takes a lock per value and walks the buckets
        # in Python on each observe, about 5 % of a POST's server CPU.
        self._tallies = _Tallies()
        self._publish_latency = self._tallies.histogram(self.publish_latency)
        self._fanout_latency = self._tallies.histogram(self.fanout_latency)
        self._http_children: dict[tuple[str, str, int], tuple[Counter, _HistogramTally]] = {}

    async def tenant_changed(self, tenant_id: str, tenant: Tenant | None) -> None:
        """Directory listener: series for a new tenant, none left of a deleted one."""
        if tenant is None:
            self._remove_tenant(tenant_id)
        elif tenant_id not in self._series:
            self._add_tenant(tenant_id)

    def _add_tenant(self, tenant_id: str) -> None:
        if self._own < self.max_tenants:
            self._own += 1
            self._series[tenant_id] = self._make_series(tenant_id)
            return
        if self._other is None:
            self._other = self._make_series(OTHER_TENANTS)
        self._series[tenant_id] = self._other

    def _make_series(self, label: str) -> _TenantSeries:
        return _TenantSeries(
            label,
            self.connections.labels(label),
            self.published_events.labels(label),
            self.delivered_events.labels(label),
        )

    def _remove_tenant(self, tenant_id: str) -> None:
        series = self._series.pop(tenant_id, None)
        if series is None or series.label != tenant_id:
            return  # _other's series stay: they count the other tenants too
        self._own -= 1
        for metric in (self.connections, self.published_events, self.delivered_events):
            metric.remove(tenant_id)

    def connection_opened(self, tenant: str) -> None:
        if (series := self._series.get(tenant)) is not None:
            series.connections.inc()

    def connection_closed(self, tenant: str) -> None:
        if (series := self._series.get(tenant)) is not None:
            series.connections.dec()

    def published(self, tenant: str, seconds: float) -> None:
        if (series := self._series.get(tenant)) is not None:
            self._tallies.count(series.published)
        self._publish_latency.observe(seconds)

    def delivered(self, tenant: str, recipients: int, seconds: float) -> None:
        """One call per event and node, with the number of sockets it was sent to."""
        if recipients and (series := self._series.get(tenant)) is not None:
            self._tallies.count(series.delivered, recipients)
        self._fanout_latency.observe(seconds)

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """`route` must be a route template, never a raw path."""
        method = method if method in HTTP_METHODS else "other"
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:
            # labels() locks and normalises on every call; the key set is bounded.
            children = self._http_children[key] = (
                self.http_requests.labels(method, route, str(status)),
                self._tallies.histogram(self.http_duration.labels(route)),
            )
        self._tallies.count(children[0])
        children[1].observe(seconds)
        if status == 429:
            self.refused_by_rate_limit("http")

    def refused_by_rate_limit(self, transport: str) -> None:
        """`transport`: "http" (a 429 answer) or "socket" (a refused `create_event`)."""
        self.rate_limited.labels(transport).inc()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (Prometheus text or OpenMetrics, as `accept` asks) and its type."""
        self._tallies.flush()
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class _HistogramTally:
    """A histogram's observations since the last scrape, bucketed as prometheus_client does."""

    __slots__ = ("_bounds", "_buckets", "_sum", "histogram")

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self._bounds = histogram._upper_bounds  # the last one is +Inf
        self._buckets = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        # The first bucket whose bound is >= amount, as `Histogram.observe`.
        self._buckets[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def flush(self) -> None:
        if not any(self._buckets):
            return
        # What `observe` would have added: the sum, and each bucket's count (buckets are
        # stored per bucket and summed up when exposed).
        self.histogram._sum.inc(self._sum)
        for value, count in zip(self.histogram._buckets, self._buckets, strict=True):
            if count:
                value.inc(count)
        self._buckets = [0] * len(self._bounds)
        self._sum = 0.0


class _Tallies:
    """Counts kept as plain numbers, moved into their prometheus_client children on flush.

    Leans on `Histogram`'s private `_upper_bounds`, `_buckets` and `_sum` (prometheus-client
    0.26, pinned); tests/unit/test_metrics_tallies.py fails if they change.
    """

    def __init__(self) -> None:
        self._counts: dict[Counter, int] = {}
        self._histograms: list[_HistogramTally] = []

    def count(self, counter: Counter, amount: int = 1) -> None:
        self._counts[counter] = self._counts.get(counter, 0) + amount

    def histogram(self, histogram: Histogram) -> _HistogramTally:
        tally = _HistogramTally(histogram)
        self._histograms.append(tally)
        return tally

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        for counter, n in counts.items():
            counter.inc(n)
        for tally in self._histograms:
            tally.flush()


class CountsFailures(Protocol):
    failures: int  # failed operations (`EventStore.failures`, `WindowCounters.failures`)


class CountsDrops(Protocol):
    slow_readers_dropped: int  # `feedserver.engineio.EngineStats`


class _OwnedTotals(Collector):
    def __init__(self, failing: Sequence[CountsFailures], engine: CountsDrops | None) -> None:
        self._failing = failing
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "feed_store_errors",
            "Store operations that failed",
            value=sum(part.failures for part in self._failing),
        )
        yield CounterMetricFamily(
            "feed_slow_consumer_disconnects",
            "Sockets disconnected because they did not read fast enough",
            value=self._engine.slow_readers_dropped if self._engine is not None else 0,
        )


def metrics_view(
    metrics: FeedMetrics, admins_only: Authenticator | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """`GET /metrics`; given an authenticator, only for callers with an admin token."""

    async def view(request: web.Request) -> web.Response:
        if admins_only is not None and not admins_only.from_headers(request.headers).admin:
            raise Forbidden("Metrics need an admin token")
        body, content_type = metrics.render(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    return view


def metrics_app(metrics: FeedMetrics) -> web.Application:
    """The app of `FEED_METRICS_PORT`: `/metrics` alone, for a network only scrapers reach."""
    app = web.Application()
    app.router.add_get(METRICS_PATH, metrics_view(metrics), allow_head=False)
    return app
