"""`RandomBytes`: ids cut from batches of kernel randomness, each byte handed out once."""

from __future__ import annotations

import os
import re

from feedserver.randomness import RandomBytes


class CountedDraws:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, size: int) -> bytes:
        self.sizes.append(size)
        return os.urandom(size)


def test_one_draw_serves_a_batch_and_no_byte_is_handed_out_twice() -> None:
    draws = CountedDraws()
    random = RandomBytes(batch=60, draw=draws)
    taken = [random.take(15) for _ in range(9)]
    assert draws.sizes == [60, 60, 60]  # 4 ids a draw; the 9th needs a third
    assert b"".join(taken[:4]) not in b"".join(taken[4:])
    assert len(set(taken)) == 9


def test_a_size_past_the_rest_of_the_batch_starts_a_new_one() -> None:
    draws = CountedDraws()
    random = RandomBytes(batch=20, draw=draws)
    random.take(15)
    assert len(random.take(15)) == 15  # 5 bytes were left: not enough
    assert len(random.take(50)) == 50  # more than a batch: drawn whole
    assert draws.sizes == [20, 20, 50]


def test_ids_have_the_shapes_of_secrets_tokens() -> None:
    random = RandomBytes()
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", random.urlsafe(12))  # token_urlsafe(12)
    assert re.fullmatch(r"[A-Za-z0-9_-]{20}", random.urlsafe(15))
    assert re.fullmatch(r"[0-9a-f]{32}", random.hex(16))  # token_hex(16)
