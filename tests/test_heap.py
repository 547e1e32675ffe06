"""A started process leaves the heap it started with out of the collector's full passes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import httpx
import pytest

from app.heap import freeze_startup_heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """As a process is before it has started: nothing frozen, the freeze not yet done."""
    gc.unfreeze()
    freeze_startup_heap.cache_clear()
    yield
    gc.unfreeze()
    freeze_startup_heap.cache_clear()


def test_the_startup_heap_is_frozen_once(unfrozen: None) -> None:
    freeze_startup_heap()
    frozen = gc.get_freeze_count()
    # The modules, routes and schemas a process starts with.
    assert frozen > 10_000
    # Objects made after the start are collected as before: a second call freezes none of them
    # (frozen objects that other tests' tasks drop meanwhile leave the count).
    made_later = [[i] for i in range(1000)]
    freeze_startup_heap()
    assert gc.get_freeze_count() < frozen + len(made_later)


async def test_the_api_freezes_its_startup_heap_when_it_starts(
    unfrozen: None, api: httpx.AsyncClient
) -> None:
    assert gc.get_freeze_count() > 10_000
    (await api.get("/healthz")).raise_for_status()
