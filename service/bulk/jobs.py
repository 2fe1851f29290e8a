"""The batch jobs of one process: the store, opened when first needed, and the job runner."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from starlette.types import ASGIApp

from service.bulk.metrics import BulkObserver
from service.bulk.runner import JobRunner
from service.bulk.store import Store
from service.errors import Unavailable
from service.models.registry import ModelRegistry
from service.ops.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)
DATABASE = "jobs.sqlite3"


class BulkService:
    def __init__(
        self, app: ASGIApp, settings: Settings, registry: ModelRegistry, metrics: Metrics
    ) -> None:
        self.app = app
        self.settings = settings
        self.registry = registry
        self.observer = BulkObserver(metrics)
        self._store: Store | None = None
        self.runner: JobRunner | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def directory(self) -> Path:
        return self.settings.data_dir

    def store(self) -> Store:
        """The store (the data directory is created on first use, not at start-up)."""
        if self._store is None:
            try:
                self._store = Store(self.directory)
            except (OSError, sqlite3.Error) as exc:
                raise Unavailable(
                    f"the data directory for batch jobs cannot be used: {exc}; "
                    "set EMBED_DATA_DIR to a writable directory",
                    code="data_dir_unavailable",
                ) from None
        return self._store

    def start(self) -> None:
        """At start-up: resume the jobs of an existing data directory."""
        if (self.directory / DATABASE).exists():
            self.ensure_runner()

    def ensure_runner(self) -> JobRunner:
        if self.runner is None:
            keys = self.settings.api_keys
            self.runner = JobRunner(
                self.app,
                self.store(),
                concurrency=self.settings.batch_concurrency,
                max_attempts=self.settings.batch_max_attempts,
                ready=lambda: self.registry.ready,
                api_key=keys[0].get_secret_value() if keys else None,
                observer=self.observer,
            )
            self._task = asyncio.create_task(self.runner.run(), name="batch-runner")
            self._task.add_done_callback(_ended)
        return self.runner

    def wake(self) -> None:
        self.ensure_runner().wake()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._store is not None:
            self._store.close()


def _ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the batch job runner stopped", exc_info=task.exception())
