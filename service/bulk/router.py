"""Routes: OpenAI's Files and Batches API for embedding jobs (docs/batch.md)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from service.bulk.jobs import BulkService
from service.bulk.shapes import COMPLETION_WINDOWS, ENDPOINTS, batch_object, file_object
from service.bulk.store import Row
from service.errors import InvalidInput, NotFound, PayloadTooLarge

router = APIRouter(tags=["Batch jobs"])


class BatchRequest(BaseModel):
    """OpenAI's `POST /v1/batches` body."""

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = Field(None, max_length=16)


def _bulk(request: Request) -> BulkService:
    service: BulkService = request.app.state.bulk
    return service


async def _file(request: Request, file_id: str) -> Row:
    row = await asyncio.to_thread(_bulk(request).store().file, file_id)
    if row is None:
        raise NotFound(f"no file with id {file_id!r}", param="file_id")
    return row


async def _batch(request: Request, batch_id: str) -> Row:
    row = await asyncio.to_thread(_bulk(request).store().batch, batch_id)
    if row is None:
        raise NotFound(f"no batch with id {batch_id!r}", param="batch_id")
    return row


@router.post("/v1/files")
async def create_file(request: Request, file: UploadFile, purpose: str = Form()) -> dict[str, Any]:
    """Upload a batch job's input: JSONL, one request per line (purpose `batch`)."""
    if purpose != "batch":
        raise InvalidInput(f"purpose must be 'batch', got {purpose!r}", param="purpose")
    service = _bulk(request)
    limit = service.settings.max_file_bytes
    try:
        row = await asyncio.to_thread(
            service.store().add_file, file.filename or "upload.jsonl", purpose, file.file, limit
        )
    except ValueError as exc:
        raise PayloadTooLarge(str(exc), param="file") from None
    return file_object(row)


@router.get("/v1/files/{file_id}")
async def retrieve_file(request: Request, file_id: str) -> dict[str, Any]:
    return file_object(await _file(request, file_id))


@router.get("/v1/files/{file_id}/content")
async def file_content(request: Request, file_id: str) -> FileResponse:
    """A file's bytes: a job's input, or its output or error lines."""
    row = await _file(request, file_id)
    return FileResponse(row["path"], media_type="application/jsonl", filename=row["filename"])


@router.post("/v1/batches")
async def create_batch(request: Request, body: BatchRequest) -> dict[str, Any]:
    """Start a job over an uploaded file; it runs below live traffic and survives restarts."""
    if body.endpoint not in ENDPOINTS:
        raise InvalidInput(
            f"endpoint must be one of {', '.join(ENDPOINTS)}; got {body.endpoint!r}",
            param="endpoint",
        )
    if body.completion_window not in COMPLETION_WINDOWS:
        raise InvalidInput("completion_window must be '24h'", param="completion_window")
    source = await _file(request, body.input_file_id)
    if source["purpose"] != "batch":
        raise InvalidInput(
            f"file {body.input_file_id!r} has purpose {source['purpose']!r}, not 'batch'",
            param="input_file_id",
        )
    service = _bulk(request)
    row = await asyncio.to_thread(
        service.store().create_batch,
        body.endpoint,
        body.input_file_id,
        body.completion_window,
        body.metadata,
    )
    service.wake()
    return batch_object(row)


@router.get("/v1/batches/{batch_id}")
async def retrieve_batch(request: Request, batch_id: str) -> dict[str, Any]:
    """A job's state, counts and rate (`progress`: lines done, per second, seconds left)."""
    return batch_object(await _batch(request, batch_id))


@router.get("/v1/batches")
async def list_batches(
    request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100)
) -> dict[str, Any]:
    rows = await asyncio.to_thread(_bulk(request).store().batches, after, limit + 1)
    data = [batch_object(row) for row in rows[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(rows) > limit,
    }


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str) -> dict[str, Any]:
    """Stop a job: the lines already done are kept in its output file."""
    await _batch(request, batch_id)
    service = _bulk(request)
    await asyncio.to_thread(service.store().cancel, batch_id)
    service.wake()
    return batch_object(await _batch(request, batch_id))
