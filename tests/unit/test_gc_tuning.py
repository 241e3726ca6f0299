"""The serving process's garbage collector settings (lifecycle.tune_gc_for_serving)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from feedserver.lifecycle import tune_gc_for_serving


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_serving_freezes_the_startup_heap_and_collects_less_often() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    tune_gc_for_serving()
    # everything alive at startup (at least the imported modules) is out of every collection
    assert gc.get_freeze_count() > 10_000
    young, middle, old = gc.get_threshold()
    assert young >= 10 * 700
    assert middle >= 10 and old >= 10
