"""Fuzz the OpenAPI schema with schemathesis against the running service (real process, tiny
model, API keys on): no 5xx, every status documented, every error in the documented envelope.
Bounded by FUZZ_SECONDS (default 12)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from tests.prod_server import running

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


def test_fuzzing_the_openapi_schema_finds_no_server_error_and_no_undocumented_answer(
    tiny_dense: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    seconds = int(os.environ.get("FUZZ_SECONDS", "12"))
    env = {
        "EMBED_MODELS": str(tiny_dense[0]),
        "EMBED_API_KEYS": "fuzz-key",
        "EMBED_LOG_LEVEL": "warning",
    }
    with running(env) as server:
        command = [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{server.url}/openapi.json",
            "-H",
            "Authorization: Bearer fuzz-key",
            "--checks",
            CHECKS,
            "--seed",
            "1",
            "--workers",
            "2",
            "--max-time",
            str(seconds),
            "--request-timeout",
            "10",
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=tmp_path, timeout=seconds + 120
        )
        assert server.process.poll() is None, "the service died under fuzzing"
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "generated" in result.stdout and " passed" in result.stdout


def test_openapi_documents_the_error_envelope_and_no_422(tiny_client: TestClient) -> None:
    schema = tiny_client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    post = schema["paths"]["/v1/embeddings"]["post"]["responses"]
    assert "422" not in post
    assert set(post) == {"200", "400", "401", "404", "413", "415", "429", "500", "503"}
    ref = post["400"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/ErrorResponse"
    health = schema["paths"]["/health"]["get"]["responses"]
    assert set(health) == {"200", "400", "413", "500"}
