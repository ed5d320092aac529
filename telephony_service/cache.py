"""Small per-process caches for rows read on every webhook, job or text.

A value is kept for `ttl` seconds: a change made in another process (the CLI, another
worker) reaches this one within that time, and a change made here clears the cache at
once. Bounded, because a long-running process must not grow without end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_all: list[TtlCache[Any, Any]] = []


class TtlCache(Generic[K, V]):
    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        # Request threads and a worker's threads read and fill it at once.
        self._lock = threading.Lock()
        _all.append(self)

    def get(self, key: K, load: Callable[[], V]) -> V:
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = load()
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (now + self.ttl, value)
        return value

    def discard(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def clear_all() -> None:
    """Forget every cached value in this process (tests: ids restart in each one)."""
    for cache in _all:
        cache.clear()
