"""OpenAI's shapes for the Files and Batches API: file and batch objects, the input lines a
job reads and the output and error lines it writes."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from service.bulk.store import Row

ENDPOINTS = ("/v1/embeddings", "/embed/dense", "/embed/sparse", "/embed/late", "/embed/hybrid")
"""Routes a batch job may run: OpenAI's, and the native ones."""
COMPLETION_WINDOWS = ("24h",)
MAX_REPORTED_ERRORS = 100  # a job refused for its input lists this many of its bad lines


def file_object(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def batch_object(row: Row) -> dict[str, Any]:
    """A job as OpenAI's Batch object, with `progress` added (lines done, rate, time left)."""
    total, completed, failed = row["total"], row["completed"], row["failed"]
    rate = row["lines_per_second"] if row["status"] == "in_progress" else 0.0
    left = total - completed - failed
    return {
        "id": row["id"],
        "object": "batch",
        "endpoint": row["endpoint"],
        "errors": json.loads(row["errors"]) if row["errors"] else None,
        "input_file_id": row["input_file_id"],
        "completion_window": row["completion_window"],
        "status": row["status"],
        "output_file_id": row["output_file_id"],
        "error_file_id": row["error_file_id"],
        "created_at": row["created_at"],
        "in_progress_at": row["in_progress_at"],
        "expires_at": None,  # jobs here do not expire
        "finalizing_at": row["finalizing_at"],
        "completed_at": row["completed_at"],
        "failed_at": row["failed_at"],
        "expired_at": None,
        "cancelling_at": row["cancelling_at"],
        "cancelled_at": row["cancelled_at"],
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "usage": {
            "input_tokens": row["input_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": row["input_tokens"],
        },
        "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
        "progress": {
            "lines_done": completed + failed,
            "lines_total": total,
            "lines_per_second": round(rate, 3),
            "seconds_left": round(left / rate, 1) if rate > 0 else None,
        },
    }


@dataclass(frozen=True)
class Line:
    """One input line of a job: `{"custom_id", "method": "POST", "url", "body"}`."""

    number: int  # 0-based
    custom_id: str
    body: bytes  # the request body, as JSON


class BadLine(ValueError):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def parse_line(number: int, raw: bytes, endpoint: str) -> Line:
    """An input line, checked as OpenAI checks them before a job starts."""
    try:
        request = json.loads(raw)
    except ValueError:
        raise BadLine("invalid_json_line", "this line is not valid JSON") from None
    if not isinstance(request, dict):
        raise BadLine("invalid_request", "this line is not a JSON object")
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise BadLine("missing_custom_id", "custom_id must be a non-empty string", "custom_id")
    if request.get("method", "POST") != "POST":
        raise BadLine("invalid_method", "method must be POST", "method")
    if request.get("url") != endpoint:
        raise BadLine(
            "mismatched_url",
            f"url must be the batch's endpoint {endpoint!r}, got {request.get('url')!r}",
            "url",
        )
    body = request.get("body")
    if not isinstance(body, dict):
        raise BadLine("invalid_body", "body must be a JSON object", "body")
    return Line(number, custom_id, json.dumps(body).encode())


def output_line(custom_id: str, status: int, body: bytes) -> str:
    """A line of the output (2xx) or error (other status) file: the route's own response."""
    try:
        json.loads(body)
        body_text = body.decode()
    except ValueError:
        body_text = json.dumps(body.decode(errors="replace"))
    request_id = f"req_{uuid.uuid4().hex}"
    head = json.dumps({"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id})[:-1]
    return (
        f'{head}, "response": {{"status_code": {status}, "request_id": "{request_id}", '
        f'"body": {body_text}}}, "error": null}}'
    )
