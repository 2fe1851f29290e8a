"""The result cache of a process that serves requests, from the settings, and its metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from service.cache.results import MemoryCache, ResultCache
from service.cache.shared import RedisCache
from service.ops.metrics import PREFIX, Metrics
from service.settings import Settings


class CacheMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.inputs = Counter(
            f"{PREFIX}_cache_inputs",
            "Prepared inputs by outcome: hit (from the cache, or the same input earlier in its "
            "request) or miss (run)",
            ["model", "outcome"],
            registry=metrics.registry,
        )

    def cache(self, model: str, hits: int, misses: int) -> None:
        if hits:
            self.inputs.labels(model, "hit").inc(hits)
        if misses:
            self.inputs.labels(model, "miss").inc(misses)


def build_cache(settings: Settings, metrics: Metrics) -> ResultCache | None:
    """Memory and shared layers as configured; None when both are off."""
    memory = (
        MemoryCache(settings.cache_max_entries, settings.cache_max_bytes)
        if settings.cache_max_entries and settings.cache_max_bytes
        else None
    )
    shared = (
        RedisCache(settings.redis_url, settings.redis_ttl_s, settings.redis_timeout_s)
        if settings.redis_url
        else None
    )
    if memory is None and shared is None:
        return None
    return ResultCache(memory, shared, CacheMetrics(metrics))


def cache_state(cache: ResultCache | None) -> dict[str, Any]:
    """/ready's details: each layer, and whether it is working."""
    if cache is None:
        return {"memory": None, "shared": None}
    memory = cache.memory
    return {
        "memory": None
        if memory is None
        else {
            "entries": len(memory),
            "bytes": memory.bytes,
            "max_entries": memory.max_entries,
            "max_bytes": memory.max_bytes,
        },
        "shared": cache.shared.state() if isinstance(cache.shared, RedisCache) else None,
    }
