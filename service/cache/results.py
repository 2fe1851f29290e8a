"""A cache of inference results, one entry per prepared input, in front of the batcher.

An input's key is a hash of the model's name, kind, graph variant and provider, and of the
prepared payload itself (token ids: prefixes, truncation, query or document markers, pairs
already applied), so every option that changes what inference sees changes the key; options
applied after inference (normalisation, `dimensions`, encodings) are applied to cached
results as to fresh ones. A vector does not depend on its batch companions (tested), so a
cached result is what inference would give.

Two layers: this process's memory (LRU, bounded by entries and by bytes), and optionally a
shared Redis (service/cache/shared.py) for several replicas. With either layer on,
identical inputs run once: inside one request, and across the requests in flight at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
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
        self._running: dict[bytes, Future[Any]] = {}  # inputs a request is running now
        self._lock = threading.Lock()

    def claim(
        self, keys: Sequence[bytes], found: dict[bytes, Any]
    ) -> tuple[dict[bytes, Future[Any]], dict[bytes, Future[Any]]]:
        """In a worker thread: of inputs missing from the cache, those this request runs
        (owned) and those another request is running already (borrowed: wait for its
        result). One that another request finished since the lookup goes into `found`
        (settle puts results in memory before it lets go of them)."""
        owned: dict[bytes, Future[Any]] = {}
        borrowed: dict[bytes, Future[Any]] = {}
        with self._lock:
            for key in keys:
                running = self._running.get(key)
                if running is not None:
                    borrowed[key] = running
                    continue
                late = self.memory.get_many([key]) if self.memory is not None else {}
                if late:
                    found.update(late)
                else:
                    owned[key] = self._running[key] = Future()
        return owned, borrowed

    def settle(
        self,
        owned: dict[bytes, Future[Any]],
        results: dict[bytes, Any],
        error: BaseException | None,
    ) -> None:
        """The owner's inputs are done: keep them in memory, then give their results (or the
        error) to the waiters."""
        if self.memory is not None and results:
            self.memory.put_many(results)
        with self._lock:
            for key in owned:
                self._running.pop(key, None)
        for key, future in owned.items():
            if future.done():
                continue
            if key in results:
                future.set_result(results[key])
            else:
                future.set_exception(RuntimeError(f"not run: {error!r}"))

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
    """`model.batcher.submit(prepare)`, with identical inputs run once (in the request, and
    across requests in flight at the same time) and cached results not run at all; one
    result per prepared input, in order. The number of inputs served without inference goes
    to the request's `cached_inputs`. No cache: just the submit."""
    assert model.batcher is not None
    if cache is None:
        return list(await model.batcher.submit(prepare))
    prefix = model_key(model)
    plan: dict[str, Any] = {}

    def prepare_misses() -> Items:
        items = prepare()
        keys = [input_key(prefix, payload) for _, payload in items]
        found = cache.lookup(keys)
        unique: dict[bytes, tuple[int, Any]] = {}
        for item, key in zip(items, keys, strict=True):
            if key not in found:
                unique.setdefault(key, item)
        owned, borrowed = cache.claim(list(unique), found)
        plan.update(keys=keys, found=found, unique=unique, owned=owned, borrowed=borrowed)
        return [unique[key] for key in owned]

    try:
        results = await model.batcher.submit(prepare_misses)
    except BaseException as error:
        cache.settle(plan.get("owned", {}), {}, error)
        raise
    fresh = {key: frozen(result) for key, result in zip(plan["owned"], results, strict=True)}
    cache.settle(plan["owned"], fresh, None)
    if fresh:
        await asyncio.to_thread(cache.store, fresh)
    ran = len(fresh) + await _borrow(model, plan["borrowed"], plan["unique"], fresh)
    keys: list[bytes] = plan["keys"]
    if cache.observer is not None:
        cache.observer.cache(model.name, len(keys) - ran, ran)
    if len(keys) > ran:
        timing.add("cached_inputs", len(keys) - ran)
    found: dict[bytes, Any] = plan["found"]
    return [found[key] if key in found else fresh[key] for key in keys]


async def _borrow(
    model: Any,
    borrowed: dict[bytes, Future[Any]],
    unique: dict[bytes, tuple[int, Any]],
    into: dict[bytes, Any],
) -> int:
    """Wait for the inputs another request is running; run those whose request failed or
    went away here. Returns how many ran here."""
    again = []
    for key, running in borrowed.items():
        try:  # shielded: this caller leaving must not cancel the others' future
            into[key] = await asyncio.shield(asyncio.wrap_future(running))
        except Exception:
            again.append(key)
    if again:
        results = await model.batcher.submit(lambda: [unique[key] for key in again])
        into.update(zip(again, results, strict=True))
    return len(again)
