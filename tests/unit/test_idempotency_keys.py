"""Idempotency keys: the memory store's atomic claim, and the key rule of both edges."""

from __future__ import annotations

import asyncio

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


async def test_a_claimed_key_returns_the_first_event_and_stores_nothing() -> None:
    store = MemoryStore(10)
    first, created = await store.append_once("t", "k", "one", TS, ttl=60)
    again, created_again = await store.append_once("t", "k", "two", TS, ttl=60)
    assert created and not created_again
    assert again == first and first.message == "one"
    assert (await store.counts("t")).latest_seq == 1


async def test_concurrent_claims_of_one_key_create_one_event() -> None:
    store = MemoryStore(10)
    results = await asyncio.gather(
        *(store.append_once("t", "k", f"m{i}", TS, ttl=60) for i in range(100))
    )
    assert sum(created for _, created in results) == 1
    assert {event.seq for event, _ in results} == {1}


async def test_a_key_is_free_again_after_its_ttl() -> None:
    clock = Clock()
    store = MemoryStore(10, clock=clock)
    await store.append_once("t", "k", "one", TS, ttl=60)
    clock.now += 59.9
    assert (await store.append_once("t", "k", "two", TS, ttl=60))[1] is False
    clock.now += 0.2
    event, created = await store.append_once("t", "k", "three", TS, ttl=60)
    assert created and event.seq == 2


async def test_the_first_event_is_returned_after_the_ring_buffer_dropped_it() -> None:
    store = MemoryStore(2)
    first, _ = await store.append_once("t", "k", "one", TS, ttl=60)
    for i in range(5):
        await store.append("t", f"m{i}", TS)
    assert await store.append_once("t", "k", "again", TS, ttl=60) == (first, False)


async def test_keys_of_one_tenant_do_not_claim_for_another() -> None:
    store = MemoryStore(10)
    await store.append_once("a", "k", "one", TS, ttl=60)
    event, created = await store.append_once("b", "k", "one", TS, ttl=60)
    assert created and event.tenant_id == "b"


async def test_each_memory_store_is_its_own_epoch() -> None:
    store = MemoryStore(10)
    assert await store.epoch() == await store.epoch() != await MemoryStore(10).epoch()


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
