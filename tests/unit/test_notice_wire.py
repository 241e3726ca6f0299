"""The messages of the `feed:notices` channel: what `cluster.parse_notice` accepts."""

from __future__ import annotations

import orjson
import pytest

from feedserver.cluster import parse_notice

NOTICE = {"message": "noon", "level": "info", "timestamp": "2026-01-01T00:00:00.000Z"}


def test_a_published_notice_is_read_back_with_its_node() -> None:
    assert parse_notice(orjson.dumps({"node": "n1", "notice": NOTICE})) == ("n1", NOTICE)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe",
        b"",
        b"not json",
        b"[]",
        b'"text"',
        orjson.dumps({"notice": NOTICE}),
        orjson.dumps({"node": 7, "notice": NOTICE}),
        orjson.dumps({"node": "n1"}),
        orjson.dumps({"node": "n1", "notice": [NOTICE]}),
        orjson.dumps({"node": "n1", "notice": {**NOTICE, "level": None}}),
        orjson.dumps({"node": "n1", "notice": {**NOTICE, "extra": "x"}}),
        orjson.dumps({"node": "n1", "notice": {"message": "noon", "level": "info"}}),
    ],
)
def test_anything_else_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_notice(data)
