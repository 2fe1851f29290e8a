"""OpenAI's Files and Batches API: the official SDK against a running service, the job
checks, and a job that survives SIGKILL with every line answered exactly once."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from service.engine.priority import BULK
from service.front.serving.dense import embed
from tests import tiny_models
from tests.conftest import ROOT, serving
from tests.prod_server import Server, running

MODEL = "tiny/dense"
WORDS = ["hello", "world", "the", "cat", "sat", "on", "mat", "red", "green", "blue", "dog"]


def text_of(n: int) -> str:
    return " ".join(WORDS[(n * 7 + k) % len(WORDS)] for k in range(1 + n % 5))


def request_line(custom_id: str, url: str, body: dict) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def jsonl(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def read_lines(content: bytes) -> list[dict]:
    return [json.loads(line) for line in content.decode().splitlines() if line.strip()]


@pytest.fixture
def server(tiny_dense: tuple[Path, np.ndarray], tmp_path: Path) -> Iterator[Server]:
    env = {"EMBED_MODELS": str(tiny_dense[0]), "EMBED_DATA_DIR": str(tmp_path / "data")}
    with running(env) as live:
        yield live


def sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def wait_for_batch(client: openai.OpenAI, batch_id: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled"):
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} still {batch.status}")


def test_the_openai_sdk_runs_an_embeddings_batch_end_to_end(
    server: Server, tiny_dense: tuple[Path, np.ndarray]
) -> None:
    _, table = tiny_dense
    client = sdk(server)
    texts = [[text_of(n), text_of(n + 1)] for n in range(12)]
    lines = [
        request_line(f"doc-{n}", "/v1/embeddings", {"model": MODEL, "input": pair})
        for n, pair in enumerate(texts)
    ]
    # one line the route refuses (an empty input): it gets an error line, the rest goes on
    lines.insert(5, request_line("bad", "/v1/embeddings", {"model": MODEL, "input": []}))
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(lines))
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/embeddings",
        completion_window="24h",
        metadata={"corpus": "test"},
    )
    assert batch.status == "validating" and batch.metadata == {"corpus": "test"}
    done = wait_for_batch(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts.model_dump() == {"total": 13, "completed": 12, "failed": 1}
    assert done.output_file_id and done.error_file_id

    output = read_lines(client.files.content(done.output_file_id).content)
    assert [line["custom_id"] for line in output] == [f"doc-{n}" for n in range(12)]
    tokens = 0
    for line, pair in zip(output, texts, strict=True):
        assert line["error"] is None and line["response"]["status_code"] == 200
        assert line["id"].startswith("batch_req_")
        body = line["response"]["body"]
        got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        expected = np.stack([tiny_models.expected_dense(table, t) for t in pair])
        np.testing.assert_allclose(got, expected, atol=1e-6)
        tokens += body["usage"]["total_tokens"]
    assert done.usage is not None and done.usage.input_tokens == tokens

    errors = read_lines(client.files.content(done.error_file_id).content)
    assert [line["custom_id"] for line in errors] == ["bad"]
    assert errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["error"]["param"] == "input"

    listed = client.batches.list(limit=5)
    assert [b.id for b in listed.data] == [batch.id]
    # progress and counts where people look
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'embed_batch_lines_total{outcome="completed"} 12.0' in metrics
    assert 'embed_batch_lines_total{outcome="failed"} 1.0' in metrics


def test_native_routes_run_as_batch_endpoints(
    server: Server, tiny_dense: tuple[Path, np.ndarray]
) -> None:
    _, table = tiny_dense
    client = sdk(server)
    lines = [
        request_line(
            f"q{n}",
            "/embed/dense",
            {"model": MODEL, "inputs": [text_of(n)], "encoding_format": "base64"},
        )
        for n in range(4)
    ]
    uploaded = client.files.create(file=("q.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/embed/dense",  # type: ignore[arg-type]  # the SDK lists OpenAI's endpoints
        completion_window="24h",
    )
    done = wait_for_batch(client, batch.id)
    assert done.status == "completed" and done.error_file_id is None
    for n, line in enumerate(read_lines(client.files.content(done.output_file_id).content)):
        vector = np.frombuffer(base64.b64decode(line["response"]["body"]["embeddings"][0]), "<f4")
        np.testing.assert_allclose(vector, tiny_models.expected_dense(table, text_of(n)), atol=1e-6)


def test_jobs_refuse_bad_requests_and_bad_input_files(
    tiny_dense: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    with serving(models=[str(tiny_dense[0])], data_dir=tmp_path / "data") as client:
        upload = {"file": ("x.jsonl", jsonl([request_line("a", "/v1/embeddings", {})]))}
        refused = client.post("/v1/files", files=upload, data={"purpose": "fine-tune"})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "purpose"
        missing = client.post(
            "/v1/batches", json={"input_file_id": "file-nope", "endpoint": "/v1/embeddings"}
        )
        assert missing.status_code == 404
        assert client.get("/v1/batches/batch_nope").status_code == 404
        assert client.get("/v1/files/file-nope/content").status_code == 404

        lines = [
            request_line("a", "/v1/embeddings", {"model": MODEL, "input": "x"}),
            "{not json",
            request_line("a", "/v1/embeddings", {"model": MODEL, "input": "y"}),
            request_line("c", "/embed/dense", {"model": MODEL, "inputs": ["z"]}),
        ]
        file_id = client.post(
            "/v1/files", files={"file": ("x.jsonl", jsonl(lines))}, data={"purpose": "batch"}
        ).json()["id"]
        wrong = client.post(
            "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        )
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "endpoint"
        created = client.post(
            "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/embeddings"}
        ).json()
        deadline = time.monotonic() + 30
        while (batch := client.get(f"/v1/batches/{created['id']}").json())["status"] in (
            "validating",
            "in_progress",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert batch["status"] == "failed" and batch["output_file_id"] is None
        codes = [(e["line"], e["code"]) for e in batch["errors"]["data"]]
        assert codes == [
            (2, "invalid_json_line"),
            (3, "duplicate_custom_id"),
            (4, "mismatched_url"),
        ]


def file_lines(server: Server, file_id: str) -> list[dict]:
    return read_lines(httpx.get(f"{server.url}/v1/files/{file_id}/content").content)


def line_ids(server: Server, batch: dict) -> list[str]:
    ids = []
    for key in ("output_file_id", "error_file_id"):
        if batch[key]:
            ids += [line["custom_id"] for line in file_lines(server, batch[key])]
    return ids


def test_a_job_killed_with_sigkill_or_stopped_resumes_and_answers_every_line_once(
    tiny_dense: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    _, table = tiny_dense
    total = 3000
    lines = [
        request_line(f"d{n}", "/v1/embeddings", {"model": MODEL, "input": text_of(n)})
        for n in range(total)
    ]
    lines[17] = request_line("d17", "/v1/embeddings", {"model": "no/such-model", "input": "x"})
    env = {
        "EMBED_MODELS": str(tiny_dense[0]),
        "EMBED_DATA_DIR": str(tmp_path / "data"),
        "EMBED_BATCH_CONCURRENCY": "2",  # slow enough to be killed in the middle
    }
    with running(env) as first:
        file_id = httpx.post(
            f"{first.url}/v1/files",
            files={"file": ("in.jsonl", jsonl(lines))},
            data={"purpose": "batch"},
        ).json()["id"]
        batch_id = httpx.post(
            f"{first.url}/v1/batches",
            json={"input_file_id": file_id, "endpoint": "/v1/embeddings"},
        ).json()["id"]
        deadline = time.monotonic() + 60
        while True:
            batch = httpx.get(f"{first.url}/v1/batches/{batch_id}").json()
            if batch["progress"]["lines_done"] >= total // 10:
                break
            assert time.monotonic() < deadline, batch
            time.sleep(0.01)
        metrics = httpx.get(f"{first.url}/metrics").text
        left = float(re.search(r"^embed_batch_lines_left (\S+)$", metrics, re.M)[1])
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        assert 0 < left < total  # the running job's lines left, in /metrics too
        assert batch["status"] == "in_progress" and batch["progress"]["lines_done"] < total
        assert batch["progress"]["lines_per_second"] > 0
    with running(env) as second:  # resumed; then stopped with SIGTERM, which drains
        deadline = time.monotonic() + 60
        while (batch := httpx.get(f"{second.url}/v1/batches/{batch_id}").json())["progress"][
            "lines_done"
        ] < total * 4 // 10:
            assert time.monotonic() < deadline, batch
            time.sleep(0.01)
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(30) == 0
    with running(env) as third:
        deadline = time.monotonic() + 120
        while (batch := httpx.get(f"{third.url}/v1/batches/{batch_id}").json())["status"] != (
            "completed"
        ):
            assert time.monotonic() < deadline, batch
            time.sleep(0.05)
        counts = batch["request_counts"]
        assert counts == {"total": total, "completed": total - 1, "failed": 1}, third.logs()
        ids = line_ids(third, batch)
        assert sorted(ids) == sorted(f"d{n}" for n in range(total))  # none lost, none twice
        for line in file_lines(third, batch["output_file_id"])[::97]:
            n = int(line["custom_id"][1:])
            got = np.array(line["response"]["body"]["data"][0]["embedding"], dtype=np.float32)
            expected = tiny_models.expected_dense(table, text_of(n))
            np.testing.assert_allclose(got, expected, atol=1e-6)
        errors = file_lines(third, batch["error_file_id"])  # draining made no error lines
        assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("d17", 404)]


def test_with_several_request_handling_processes_one_runs_the_jobs(
    tiny_dense: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    _, table = tiny_dense
    env = {
        "EMBED_MODELS": str(tiny_dense[0]),
        "EMBED_DATA_DIR": str(tmp_path / "data"),
        "EMBED_WORKERS": "2",
    }
    lines = [
        request_line(f"d{n}", "/v1/embeddings", {"model": MODEL, "input": text_of(n)})
        for n in range(40)
    ]
    with running(env) as server:
        client = sdk(server)
        batches = []
        for _ in range(3):  # new connections: the kernel spreads them over both processes
            uploaded = client.files.create(
                file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch"
            )
            batches.append(
                client.batches.create(
                    input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
                )
            )
        for batch in batches:
            done = wait_for_batch(client, batch.id)
            assert done.status == "completed"
            output = read_lines(client.files.content(done.output_file_id).content)
            assert [line["custom_id"] for line in output] == [f"d{n}" for n in range(40)]
            got = np.array(output[7]["response"]["body"]["data"][0]["embedding"], np.float32)
            np.testing.assert_allclose(
                got, tiny_models.expected_dense(table, text_of(7)), atol=1e-6
            )
        assert server.logs().count("running batch jobs from") == 1


def test_embed_file_resumes_after_sigkill_with_every_line_once(
    tiny_dense: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    _, table = tiny_dense
    total = 3000
    source, output = tmp_path / "corpus.jsonl", tmp_path / "vectors.jsonl"
    lines = [
        request_line(f"d{n}", "/v1/embeddings", {"model": MODEL, "input": text_of(n)})
        for n in range(total)
    ]
    lines[5] = request_line("d5", "/v1/embeddings", {"model": MODEL, "input": ""})
    source.write_bytes(jsonl(lines))
    command = [sys.executable, "-m", "service", "embed-file", str(source), str(output)]
    env = {**os.environ, "EMBED_MODELS": str(tiny_dense[0]), "EMBED_BATCH_CONCURRENCY": "2"}
    database = tmp_path / "vectors.jsonl.state" / "jobs.sqlite3"
    with (tmp_path / "first.log").open("wb") as log:
        first = subprocess.Popen(command, env=env, cwd=ROOT, stderr=log)
    try:
        deadline = time.monotonic() + 60
        done = 0
        while done < total // 10:
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
            with (
                contextlib.suppress(sqlite3.Error),
                contextlib.closing(sqlite3.connect(database)) as db,
            ):
                row = db.execute("SELECT completed + failed FROM batches").fetchone()
                done = row[0] if row else 0
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert not output.exists()
    second = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, timeout=120)
    assert second.returncode == 1, second.stderr  # one line failed
    assert b"2999 lines embedded" in second.stderr and b"1 failed" in second.stderr
    written = read_lines(output.read_bytes())
    assert [line["custom_id"] for line in written] == [f"d{n}" for n in range(total) if n != 5]
    for line in written[::101]:
        got = np.array(line["response"]["body"]["data"][0]["embedding"], dtype=np.float32)
        n = int(line["custom_id"][1:])
        np.testing.assert_allclose(got, tiny_models.expected_dense(table, text_of(n)), atol=1e-6)
    errors = read_lines(output.with_name("vectors.jsonl.errors.jsonl").read_bytes())
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("d5", 400)]


def test_the_readme_indexing_example_runs(
    server: Server, tiny_dense: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Indexing a corpus\n")
    section = readme[start : readme.index("\n## ", start + 1)]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    code = code.replace("http://localhost:8000", server.url).replace(
        '"sentence-transformers/all-MiniLM-L6-v2"', f'"{MODEL}"'
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    dim = tiny_dense[1].shape[1]
    assert ran.stdout.split("\n")[:2] == [f"doc-0 {dim}", f"doc-1 {dim}"]


def test_a_job_runs_each_distinct_input_once_with_the_cache_on(
    tiny_dense: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    _, table = tiny_dense
    texts = [text_of(n % 5) for n in range(40)]  # 5 distinct texts, each 8 times
    lines = [
        request_line(f"d{n}", "/v1/embeddings", {"model": MODEL, "input": [text, text]})
        for n, text in enumerate(texts)
    ]
    settings = {
        "models": [str(tiny_dense[0])],
        "data_dir": tmp_path / "data",
        "cache_max_entries": 1000,
    }
    with serving(**settings) as client:
        file_id = client.post(
            "/v1/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}
        ).json()["id"]
        batch = client.post(
            "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/embeddings"}
        ).json()
        deadline = time.monotonic() + 30
        while (batch := client.get(f"/v1/batches/{batch['id']}").json())["status"] != "completed":
            assert time.monotonic() < deadline, batch
            time.sleep(0.02)
        output = read_lines(client.get(f"/v1/files/{batch['output_file_id']}/content").content)
        run = client.get("/metrics").text
    for line, text in zip(output, texts, strict=True):
        body = line["response"]["body"]
        got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        np.testing.assert_allclose(got[0], tiny_models.expected_dense(table, text), atol=1e-6)
        assert np.array_equal(got[0], got[1])
        assert body["usage"]["cached_inputs"] >= 1  # its second input, at least
    assert 'embed_batch_size_sum{model="tiny/dense"} 5.0' in run  # 80 inputs, 5 ran
    assert 'embed_cache_inputs_total{model="tiny/dense",outcome="hit"} 75.0' in run


def one_input_lines(count: int) -> list[str]:
    return [
        request_line(f"l{n}", "/v1/embeddings", {"model": MODEL, "input": [text_of(n)]})
        for n in range(count)
    ]


def held_job_settings(
    tiny_dense: tuple[Path, np.ndarray], tmp_path: Path, *, concurrency: int
) -> dict[str, Any]:
    """The in-process app for a job whose batches a test holds (no cache: every input runs)."""
    return {
        "models": [str(tiny_dense[0])],
        "data_dir": tmp_path / "data",
        "batch_concurrency": concurrency,
        "cache_max_entries": 0,
    }


def test_a_stopped_runner_leaves_no_input_of_its_lines_to_run(
    tiny_dense: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """Stopping the job runner (the job cancelled, the process stopping) cancels its lines;
    their inputs waiting in the batcher must go with them, not run later for nobody."""
    lines = one_input_lines(6)
    with serving(**held_job_settings(tiny_dense, tmp_path, concurrency=6)) as client:
        model = client.app.state.registry.models[MODEL]
        gate, entered = threading.Event(), threading.Event()
        original = model.runners[0].run
        ran: list[int] = []  # the inputs of each run

        def held(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            entered.set()
            gate.wait(30)
            ran.append(len(feeds["input_ids"]))
            return original(feeds)

        model.runners[0].run = held
        accepted: list[int] = []
        accept = model.batcher.accept

        def counted(items: Any, *, bulk: bool = False) -> Any:
            accepted.append(len(items))
            return accept(items, bulk=bulk)

        model.batcher.accept = counted  # type: ignore[method-assign]

        async def bulk_embed(text: str) -> list[float]:
            token = BULK.set(True)
            try:
                vectors = await embed(model, [text], input_type=None, truncate=True)
            finally:
                BULK.reset(token)
            return [float(v) for v in vectors.vectors[0]]

        holding = client.portal.start_task_soon(bulk_embed, "first")  # type: ignore[union-attr]
        assert entered.wait(10)  # a bulk batch of one input runs, held
        file_id = client.post(
            "/v1/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}
        ).json()["id"]
        client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/embeddings"})
        deadline = time.monotonic() + 10
        while sum(accepted) < 7:  # every line's input is in the batcher, behind the held one
            assert time.monotonic() < deadline, accepted
            time.sleep(0.01)
        client.portal.call(client.app.state.bulk.stop)  # type: ignore[union-attr]
        gate.set()
        holding.result(10)
        after = client.portal.call(bulk_embed, "after")  # type: ignore[union-attr]
    expected = tiny_models.expected_dense(tiny_dense[1], "after", normalize=False)
    np.testing.assert_allclose(after, expected, atol=1e-6)  # embed's raw pooled vector
    assert ran == [1, 1]  # the held input and the one after: none of the lines' six


def test_a_cancelled_job_ends_while_its_lines_still_wait_and_keeps_the_lines_done(
    tiny_dense: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """The SDK's cancel: the job turns cancelled without waiting for the lines in flight
    (a batch may run for minutes), and its output file holds the lines done before."""
    _, table = tiny_dense
    lines = one_input_lines(8)
    with serving(**held_job_settings(tiny_dense, tmp_path, concurrency=4)) as client:
        model = client.app.state.registry.models[MODEL]
        gate = threading.Event()
        runs: list[int] = []
        original = model.runners[0].run

        def held(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            runs.append(len(feeds["input_ids"]))
            if len(runs) > 1:  # the first batch runs; every later one waits
                gate.wait(30)
            return original(feeds)

        model.runners[0].run = held
        api = openai.OpenAI(
            base_url=f"{client.base_url}/v1", api_key="unused", http_client=client, max_retries=0
        )
        try:
            uploaded = api.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
            batch = api.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
            )
            deadline = time.monotonic() + 10
            while not runs or api.batches.retrieve(batch.id).request_counts.completed < runs[0]:
                assert time.monotonic() < deadline, api.batches.retrieve(batch.id)
                time.sleep(0.02)
            while len(runs) < 2:  # the next batch holds
                assert time.monotonic() < deadline, runs
                time.sleep(0.01)
            cancelling = api.batches.cancel(batch.id)
            assert cancelling.status == "cancelling"
            deadline = time.monotonic() + 10
            while (ended := api.batches.retrieve(batch.id)).status != "cancelled":
                assert time.monotonic() < deadline, ended  # the held batch holds meanwhile
                time.sleep(0.02)
            assert not gate.is_set() and ended.cancelled_at is not None
            assert ended.output_file_id is not None
            output = read_lines(api.files.content(ended.output_file_id).content)
        finally:
            gate.set()
    done = runs[0]
    assert ended.request_counts.completed == len(output) == done
    assert ended.request_counts.total == 8 and ended.request_counts.failed == 0
    for line in output:
        n = int(line["custom_id"][1:])
        got = np.array(line["response"]["body"]["data"][0]["embedding"], dtype=np.float32)
        np.testing.assert_allclose(got, tiny_models.expected_dense(table, text_of(n)), atol=1e-6)
