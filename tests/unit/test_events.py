"""The event object, its timestamp, the error shapes and the handshake's `since`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from feedserver.errors import FeedError, ForbiddenTenant, RateLimited, ValidationFailed
from feedserver.events import Event, UtcClock, utc_timestamp
from feedserver.jsoncodec import SocketJson
from feedserver.realtime import ack_error, parse_since


def test_event_json_has_the_protocol_fields() -> None:
    event = Event(42, "tenant_a", "hello &lt;b&gt;", "2026-01-20T10:30:00.000Z")
    data = event.to_json()
    assert data == {
        "id": "tenant_a-42",
        "seq": 42,
        "tenantId": "tenant_a",
        "message": "hello &lt;b&gt;",
        "timestamp": "2026-01-20T10:30:00.000Z",
    }


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 1, 20, 10, 30, tzinfo=UTC), "2026-01-20T10:30:00.000Z"),
        (datetime(2026, 1, 20, 10, 30, 5, 123999, tzinfo=UTC), "2026-01-20T10:30:05.123Z"),
        (
            datetime(2026, 1, 20, 12, 0, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-20T10:00:00.000Z",
        ),
    ],
)
def test_timestamps_are_utc_with_milliseconds_and_z(moment: datetime, text: str) -> None:
    assert utc_timestamp(moment) == text


def test_the_clock_says_what_utc_timestamp_says_across_second_and_day_boundaries() -> None:
    start = datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC)
    now_ns = int(start.timestamp()) * 1_000_000_000
    clock = UtcClock(lambda: now_ns)
    # Steps that cross milliseconds, seconds, a minute, a day and a year, and go back.
    for step_ns in (0, 999_999, 1, 998_999_999, 1, -1_500_000_000, 2_000_000_000, 700_000_123, 7):
        now_ns += step_ns
        expected = utc_timestamp(datetime.fromtimestamp(now_ns // 1000 / 1_000_000, UTC))
        assert clock.timestamp() == expected
    assert clock.timestamp().startswith("2027-01-01T00:00:0")


def test_the_clock_reads_the_real_time_by_default() -> None:
    before = utc_timestamp()
    stamped = UtcClock().timestamp()
    assert before <= stamped <= utc_timestamp()


def test_now_has_the_same_shape() -> None:
    now = utc_timestamp()
    assert len(now) == 24 and now.endswith("Z") and now[19] == "."
    parsed = datetime.fromisoformat(now.replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - parsed) < timedelta(seconds=5)


def test_error_json_has_details_only_when_given() -> None:
    assert ForbiddenTenant().to_json() == {
        "code": "forbidden_tenant",
        "message": "Unknown or forbidden tenant",
    }
    failed = ValidationFailed("Invalid message", {"message": "must not be empty"})
    assert failed.to_json() == {
        "code": "validation_error",
        "message": "Invalid message",
        "details": {"message": "must not be empty"},
    }
    assert (failed.status, FeedError().status, FeedError().code) == (400, 500, "internal_error")


def test_retry_after_is_at_least_one_second() -> None:
    assert RateLimited(0).retry_after == 1
    assert RateLimited(7).retry_after == 7
    assert RateLimited(7).status == 429


def test_ack_error_shape() -> None:
    assert ack_error(ForbiddenTenant()) == {
        "ok": False,
        "error": {"code": "forbidden_tenant", "message": "Unknown or forbidden tenant"},
    }


@pytest.mark.parametrize(("raw", "value"), [(None, None), ("", None), (0, 0), ("17", 17), (5, 5)])
def test_since_from_the_handshake(raw: object, value: int | None) -> None:
    assert parse_since(raw) == value


@pytest.mark.parametrize("raw", [-1, "-1", "x", 1.5, True, [], {}, 2**53, "1e3"])
def test_bad_since_is_a_validation_error(raw: object) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_since(raw)
    assert refused.value.details == {"since": "must be a non-negative integer"}


def test_socket_json_round_trips_unicode() -> None:
    data = {"message": "é 😀 &lt;", "seq": 1}
    text = SocketJson.dumps(data, separators=(",", ":"))
    assert isinstance(text, str)
    assert SocketJson.loads(text) == data


def test_timestamp_before_is_the_timestamp_of_that_many_seconds_ago() -> None:
    now_ns = int(datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC).timestamp()) * 1_000_000_000 + 7
    clock = UtcClock(lambda: now_ns + 42_000_000)
    assert clock.timestamp() == "2027-01-01T00:00:05.042Z"
    assert clock.timestamp_before(6) == "2026-12-31T23:59:59.042Z"
    assert clock.timestamp_before(86_400) == "2026-12-31T00:00:05.042Z"
    # Text order is time order: what a store compares.
    assert clock.timestamp_before(1) < clock.timestamp() < "2027-01-01T00:00:05.043Z"
