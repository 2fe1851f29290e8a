"""`python -m service embed-file INPUT.jsonl OUTPUT`: a batch job over a local file, run in
this process with the service's own machinery (app, batcher, job runner), with a progress
bar and the same resume guarantee as the Batch API.

INPUT holds the Batch API's lines (`{"custom_id", "method", "url", "body"}`; the first line's
url is the job's endpoint). OUTPUT gets the output lines in input order; failed lines go to
OUTPUT.errors.jsonl. The job's state lives in a data directory (OUTPUT.state by default):
run the same command again after a crash and it goes on where it stopped, as long as INPUT
has not changed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from service.bulk.runner import JobRunner
from service.bulk.shapes import ENDPOINTS
from service.bulk.store import Row, Store
from service.settings import Settings

POLL_S = 0.25  # how often the progress bar reads the job's counts


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service embed-file",
        description="Embed a JSONL file of Batch API requests, resuming after a crash.",
    )
    parser.add_argument("input", type=Path, help="JSONL: one Batch API request per line")
    parser.add_argument("output", type=Path, help="where the output lines go")
    parser.add_argument(
        "--model", action="append", dest="models", help="model to load (EMBED_MODELS)"
    )
    parser.add_argument("--data-dir", type=Path, help="the job's state (default OUTPUT.state)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def job_id(source: Path, output: Path) -> str:
    """The same input (path, size, modification time) and output: the same job."""
    stat = source.stat()
    key = f"{source.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{output.resolve()}"
    return "batch_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def endpoint_of(source: Path) -> str:
    with source.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                try:
                    url = json.loads(raw).get("url", "/v1/embeddings")
                except (ValueError, AttributeError):
                    return "/v1/embeddings"  # the job fails validation with the line's error
                return str(url) if url in ENDPOINTS else "/v1/embeddings"
    return "/v1/embeddings"


def main(argv: Sequence[str]) -> int:
    args = _arguments(argv)
    if not args.input.is_file():
        print(f"embed-file: {args.input} is not a file", file=sys.stderr)
        return 2
    overrides: dict[str, object] = {"batch_api": False, "workers": 1, "ui": False}
    if args.models:
        overrides["models"] = args.models
    settings = Settings(**overrides)  # type: ignore[arg-type]  # validated by pydantic
    data_dir = args.data_dir or args.output.with_name(args.output.name + ".state")
    job = asyncio.run(_run(settings, args.input, args.output, data_dir, not args.quiet))
    if job["status"] == "failed":
        for error in json.loads(job["errors"])["data"]:
            print(f"line {error['line']}: {error['message']}", file=sys.stderr)
        return 1
    failed = job["failed"]
    print(
        f"{job['completed']} lines embedded into {args.output}"
        + (f", {failed} failed (see {_errors_path(args.output)})" if failed else ""),
        file=sys.stderr,
    )
    return 0 if not failed else 1


def _errors_path(output: Path) -> Path:
    return output.with_name(output.name + ".errors.jsonl")


async def _run(settings: Settings, source: Path, output: Path, data_dir: Path, bar: bool) -> Row:
    from service.app import create_app

    app = create_app(settings)
    registry = app.state.registry
    store = Store(data_dir)
    batch_id = job_id(source, output)
    file_id = "file-" + batch_id.removeprefix("batch_") + "-input"
    store.register_file(file_id, source.name, "batch", source)
    store.create_batch(endpoint_of(source), file_id, "24h", None, batch_id=batch_id)
    keys = settings.api_keys
    runner = JobRunner(
        app,
        store,
        concurrency=settings.batch_concurrency,
        max_attempts=settings.batch_max_attempts,
        ready=lambda: registry.ready,
        api_key=keys[0].get_secret_value() if keys else None,
    )
    async with app.router.lifespan_context(app):
        while not registry.ready:
            if registry.error:
                raise SystemExit(f"embed-file: {registry.error}")
            await asyncio.sleep(POLL_S)
        watcher = asyncio.create_task(_progress(store, batch_id)) if bar else None
        try:
            await runner.run(until=batch_id)
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
    job = store.batch(batch_id)
    assert job is not None
    for key, target in (("output_file_id", output), ("error_file_id", _errors_path(output))):
        produced = store.file(job[key]) if job[key] else None
        if produced is not None:
            shutil.copyfile(produced["path"], target)
    store.close()
    return job


async def _progress(store: Store, batch_id: str) -> None:
    from tqdm import tqdm

    with tqdm(unit="line", desc="embedding", dynamic_ncols=True) as progress:
        while True:
            job = await asyncio.to_thread(store.batch, batch_id)
            if job is not None:
                progress.total = job["total"] or None
                with contextlib.suppress(ValueError):
                    progress.n = job["completed"] + job["failed"]
                progress.set_postfix(failed=job["failed"], refresh=False)
                progress.refresh()
            await asyncio.sleep(POLL_S)
