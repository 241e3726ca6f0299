"""Idempotency keys: the memory store's expiry, and the key rule of both edges.

The claim itself is in the store contract (tests/integration/test_store_contract.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedserver.errors import ValidationFailed
from feedserver.schemas import PublishRequest, parse_idempotency_key, parse_publish
from feedserver.store import MemoryStore

TS = "2026-01-20T10:30:00.000Z"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_key_is_free_again_after_its_ttl() -> None:
    clock = Clock()
    store = MemoryStore(10, clock=clock)
    await store.append_once("t", "k", "one", TS, ttl=60)
    clock.now += 59.9
    assert (await store.append_once("t", "k", "two", TS, ttl=60))[1] is False
    clock.now += 0.2
    event, created = await store.append_once("t", "k", "three", TS, ttl=60)
    assert created and event.seq == 2


@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128
    )
)
def test_visible_ascii_keys_are_accepted_on_both_edges(key: str) -> None:
    assert parse_idempotency_key(key) == key
    assert parse_publish({"message": "m", "idempotencyKey": key}) == PublishRequest("m", key)


@pytest.mark.parametrize("key", ["", " ", "x" * 129, "a b", "\u00e9", "a\n"])
def test_other_keys_are_refused_on_both_edges(key: str) -> None:
    with pytest.raises(ValidationFailed) as header:
        parse_idempotency_key(key)
    assert header.value.details == {"Idempotency-Key": "must be 1..128 visible ASCII characters"}
    with pytest.raises(ValidationFailed) as payload:
        parse_publish({"message": "m", "idempotencyKey": key})
    assert payload.value.details is not None and "idempotencyKey" in payload.value.details


def test_publish_payload_still_refuses_unknown_fields() -> None:
    assert parse_publish({"message": "m"}) == PublishRequest("m")
    with pytest.raises(ValidationFailed) as refused:
        parse_publish({"message": "m", "idempotency_key": "k"})
    assert refused.value.details is not None and "idempotency_key" in refused.value.details
