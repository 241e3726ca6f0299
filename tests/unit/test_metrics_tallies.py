"""Counts kept in plain numbers until a scrape expose exactly what prometheus_client would.

`FeedMetrics` tallies per-request and per-publish observations itself and moves them into
prometheus_client's children when scraped, writing `Histogram` internals: these tests fail
if a prometheus-client release changes them.
"""

from __future__ import annotations

from feedserver.metrics import LATENCY_BUCKETS, FeedMetrics

# Bucket bounds exactly, between them, over the largest (+Inf) and zero.
SECONDS = [0.0, 0.0001, 0.00011, 0.0003, 0.005, 0.0049, 1.0, 4.9, 5.0, 7.5, 0.00025]
REQUESTS = [("POST", "/api/events", 201), ("GET", "/api/events", 200), ("POST", "/api/events", 429)]


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
        metrics._published["tenant_a"].inc()


def through_tallies(metrics: FeedMetrics) -> None:
    for n, seconds in enumerate(SECONDS):
        method, route, status = REQUESTS[n % len(REQUESTS)]
        metrics.http_request(method, route, status, seconds)
        metrics.published("tenant_a", seconds)


def test_tallied_observations_expose_what_prometheus_client_would() -> None:
    direct, tallied = FeedMetrics(["tenant_a"]), FeedMetrics(["tenant_a"])
    through_prometheus(direct)
    through_tallies(tallied)
    assert exposed(tallied) == exposed(direct)
    assert 'feed_publish_latency_seconds_bucket{le="+Inf"} 11.0' in exposed(tallied)


def test_each_observation_is_exposed_once_across_scrapes() -> None:
    direct, tallied = FeedMetrics(["tenant_a"]), FeedMetrics(["tenant_a"])
    for _ in range(2):
        through_prometheus(direct)
        through_tallies(tallied)
        assert exposed(tallied) == exposed(direct)
        assert exposed(tallied) == exposed(tallied)  # a scrape with nothing new adds nothing


def test_the_tallies_bucket_like_the_histogram() -> None:
    assert FeedMetrics(["tenant_a"]).publish_latency._upper_bounds == [
        *LATENCY_BUCKETS,
        float("inf"),
    ]
