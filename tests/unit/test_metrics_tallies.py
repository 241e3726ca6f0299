"""Counts kept in plain numbers until a scrape expose exactly what prometheus_client would.

`FeedMetrics` tallies per-request, per-publish and per-fan-out observations itself and moves
them into prometheus_client's children when scraped, writing `Histogram` internals: these tests fail
if a prometheus-client release changes them.
"""

from __future__ import annotations

from feedserver.metrics import LATENCY_BUCKETS, FeedMetrics
from feedserver.tenants import Tenant, TenantDirectory

# Bucket bounds exactly, between them, over the largest (+Inf) and zero.
SECONDS = [0.0, 0.0001, 0.00011, 0.0003, 0.005, 0.0049, 1.0, 4.9, 5.0, 7.5, 0.00025]
REQUESTS = [("POST", "/api/events", 201), ("GET", "/api/events", 200), ("POST", "/api/events", 429)]
# (tenant, sockets sent to) per fan-out: none, several, and a tenant that is not configured.
FANOUTS = [("tenant_a", 3), ("tenant_b", 0), ("tenant_a", 1000), ("tenant_x", 2), ("tenant_b", 7)]
TENANTS = ["tenant_a", "tenant_b"]


def metrics_of(tenants: list[str]) -> FeedMetrics:
    return FeedMetrics(TenantDirectory(Tenant(t) for t in tenants))


def exposed(metrics: FeedMetrics) -> list[str]:
    """The exposition without what differs between two instances (creation times, process)."""
    body, _ = metrics.render(None)
    return [
        line
        for line in body.decode().splitlines()
        if "_created" not in line and not line.startswith(("process_", "# HELP process_"))
    ]


def through_prometheus(metrics: FeedMetrics) -> None:
    """What `FeedMetrics` recorded before it kept tallies: inc() and observe() each time."""
    for n, seconds in enumerate(SECONDS):
        method, route, status = REQUESTS[n % len(REQUESTS)]
        metrics.http_requests.labels(method, route, str(status)).inc()
        metrics.http_duration.labels(route).observe(seconds)
        if status == 429:
            metrics.refused_by_rate_limit("http")
        metrics.publish_latency.observe(seconds)
        metrics.published_events.labels("tenant_a").inc()
        tenant, recipients = FANOUTS[n % len(FANOUTS)]
        if tenant in TENANTS:
            metrics.delivered_events.labels(tenant).inc(recipients)
        metrics.fanout_latency.observe(seconds)


def through_tallies(metrics: FeedMetrics) -> None:
    for n, seconds in enumerate(SECONDS):
        method, route, status = REQUESTS[n % len(REQUESTS)]
        metrics.http_request(method, route, status, seconds)
        metrics.published("tenant_a", seconds)
        metrics.delivered(*FANOUTS[n % len(FANOUTS)], seconds)


def test_tallied_observations_expose_what_prometheus_client_would() -> None:
    direct, tallied = metrics_of(TENANTS), metrics_of(TENANTS)
    through_prometheus(direct)
    through_tallies(tallied)
    lines = exposed(tallied)
    assert lines == exposed(direct)
    assert 'feed_publish_latency_seconds_bucket{le="+Inf"} 11.0' in lines
    # 11 fan-outs cycle through FANOUTS: tenant_a 3 + 1000 twice and 3 once more, tenant_b 7 twice.
    assert 'feed_events_delivered_total{tenant="tenant_a"} 2009.0' in lines
    assert 'feed_events_delivered_total{tenant="tenant_b"} 14.0' in lines
    assert 'feed_fanout_latency_seconds_bucket{le="0.00025"} 4.0' in lines
    assert "feed_fanout_latency_seconds_count 11.0" in lines


def test_each_observation_is_exposed_once_across_scrapes() -> None:
    direct, tallied = metrics_of(TENANTS), metrics_of(TENANTS)
    assert exposed(tallied) == exposed(direct)  # nothing yet: zero counts, empty buckets
    for _ in range(2):
        through_prometheus(direct)
        through_tallies(tallied)
        assert exposed(tallied) == exposed(direct)
        assert exposed(tallied) == exposed(tallied)  # a scrape with nothing new adds nothing


def test_the_tallies_bucket_like_the_histogram() -> None:
    assert metrics_of(["tenant_a"]).publish_latency._upper_bounds == [
        *LATENCY_BUCKETS,
        float("inf"),
    ]
