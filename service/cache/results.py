"""A cache of inference results, one entry per prepared input, in front of the batcher.

An input's key is a hash of the model's name, kind, graph variant and provider, and of the
prepared payload itself (token ids: prefixes, truncation, query or document markers, pairs
already applied), so every option that changes what inference sees changes the key; options
applied after inference (normalisation, `dimensions`, encodings) are applied to cached
results as to fresh ones. A vector does not depend on its batch companions (tested), so a
cached result is what inference would give.

Two layers: this process's memory (LRU, bounded by entries and by bytes), and optionally a
shared Redis (service/cache/shared.py) for several replicas. With either layer on,
identical inputs inside one request (or one line of a batch job) run once.
"""

from __future__ import annotations

import asyncio
import hashlib
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from service.ops import timing

Items = Sequence[tuple[int, Any]]


class SharedCache(Protocol):
    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Any]: ...
    def put_many(self, entries: dict[bytes, Any]) -> None: ...
    def close(self) -> None: ...


class CacheObserver(Protocol):
    def cache(self, model: str, hits: int, misses: int) -> None: ...


def size_of(result: Any) -> int:
    """Bytes a result holds (arrays' buffers; a small constant for anything else)."""
    if isinstance(result, np.ndarray):
        return int(result.nbytes) + 112
    if isinstance(result, tuple | list):
        return sum(size_of(part) for part in result) + 56
    if isinstance(result, dict):
        return sum(size_of(part) for part in result.values()) + 232
    return 64


def frozen(result: Any) -> Any:
    """A read-only copy: a caller that modified a cached array in place would corrupt the
    cache; now it fails loudly instead."""
    if isinstance(result, np.ndarray):
        copy = result.copy()
        copy.flags.writeable = False
        return copy
    if isinstance(result, tuple):
        return tuple(frozen(part) for part in result)
    if isinstance(result, list):
        return [frozen(part) for part in result]
    return result


class MemoryCache:
    """LRU over entries and bytes; safe to use from several threads."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Any]:
        found = {}
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    found[key] = entry[0]
        return found

    def put_many(self, entries: dict[bytes, Any]) -> None:
        with self._lock:
            for key, result in entries.items():
                size = size_of(result)
                if size > self.max_bytes or key in self._entries:
                    continue
                self._entries[key] = (result, size)
                self.bytes += size
            while self._entries and (
                len(self._entries) > self.max_entries or self.bytes > self.max_bytes
            ):
                _, (_, size) = self._entries.popitem(last=False)
                self.bytes -= size


class ResultCache:
    """The memory layer, the shared layer if any, and the counts."""

    def __init__(
        self,
        memory: MemoryCache | None,
        shared: SharedCache | None = None,
        observer: CacheObserver | None = None,
    ) -> None:
        self.memory = memory
        self.shared = shared
        self.observer = observer

    def lookup(self, keys: Sequence[bytes]) -> dict[bytes, Any]:
        """In a worker thread: what either layer holds (shared hits warm the memory)."""
        found = self.memory.get_many(keys) if self.memory is not None else {}
        missing = [key for key in keys if key not in found]
        if self.shared is not None and missing:
            remote = self.shared.get_many(missing)
            if remote and self.memory is not None:
                self.memory.put_many(remote)
            found.update(remote)
        return found

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()

    def store(self, entries: dict[bytes, Any]) -> None:
        """In a worker thread: keep fresh results in both layers."""
        if self.memory is not None:
            self.memory.put_many(entries)
        if self.shared is not None:
            self.shared.put_many(entries)


def model_key(model: Any) -> bytes:
    """What, beside the payload, decides a result: the model, its graph and provider."""
    spec = model.spec
    return f"{spec.name}\0{spec.kind}\0{model.variant}\0{model.provider}\0".encode()


def input_key(prefix: bytes, payload: Any) -> bytes:
    digest = hashlib.blake2b(prefix, digest_size=20)
    digest.update(pickle.dumps(payload, protocol=5))
    return digest.digest()


async def submit_cached(
    model: Any, prepare: Callable[[], Items], cache: ResultCache | None
) -> list[Any]:
    """`model.batcher.submit(prepare)`, with identical inputs run once and cached results
    not run at all; one result per prepared input, in order. The number of inputs served
    without inference goes to the request's `cached_inputs`. No cache: just the submit."""
    assert model.batcher is not None
    if cache is None:
        return list(await model.batcher.submit(prepare))
    prefix = model_key(model)
    plan: dict[str, Any] = {}

    def prepare_misses() -> Items:
        items = prepare()
        keys = [input_key(prefix, payload) for _, payload in items]
        found = cache.lookup(keys)
        first: dict[bytes, int] = {}  # each key to run: its place among the misses
        misses: list[tuple[int, Any]] = []
        for (length, payload), key in zip(items, keys, strict=True):
            if key not in found and key not in first:
                first[key] = len(misses)
                misses.append((length, payload))
        plan.update(keys=keys, found=found, first=first)
        return misses

    results = await model.batcher.submit(prepare_misses)
    keys: list[bytes] = plan["keys"]
    found: dict[bytes, Any] = plan["found"]
    first: dict[bytes, int] = plan["first"]
    fresh = {key: results[place] for key, place in first.items()}
    served = len(keys) - len(first)
    kept = {key: frozen(result) for key, result in fresh.items()}
    if kept:
        await asyncio.to_thread(cache.store, kept)
    if cache.observer is not None:
        cache.observer.cache(model.name, served, len(first))
    if served:
        timing.add("cached_inputs", served)
    return [found[key] if key in found else fresh[key] for key in keys]
