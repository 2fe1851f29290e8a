"""In-process figures: tokenizers + the graph's runtime (ONNX Runtime, or OpenVINO for an IR
graph) with no service around them."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.corpus import sorted_batches, tokenizer
from service.engine.openvino_runner import OpenVinoRunner, is_openvino_graph
from service.engine.runner import CPU, OnnxRunner
from service.models.loaded import GraphRunner

THREADS = int(os.environ.get("BENCH_THREADS", str(os.cpu_count() or 1)))


def session(graph: Path, threads: int, spinning: bool = False) -> GraphRunner:
    """The service's own runner of the graph (ONNX Runtime's with every graph optimisation)."""
    if is_openvino_graph(graph):
        return OpenVinoRunner(graph, threads=threads)
    return OnnxRunner(graph, provider=CPU, threads=threads, spinning=spinning)


def embed(sess: GraphRunner, feeds: dict[str, np.ndarray]) -> np.ndarray:
    hidden = sess.run(feeds)[0]
    if hidden.ndim == 2:
        return hidden
    weights = feeds["attention_mask"][:, :, None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def throughput(
    directory: Path,
    graph: str,
    texts: list[str],
    batch: int,
    threads: int,
    sort: bool = True,
    spinning: bool = False,
    sessions: int = 1,
) -> tuple[float, np.ndarray]:
    """Texts/s (tokenization included) and the vectors in input order. With several
    sessions, each runs in its own thread and takes the next batch when it is free."""
    pool = [session(directory / graph, threads, spinning) for _ in range(sessions)]
    tok = tokenizer(directory, 256)
    for sess in pool:
        embed(sess, sorted_batches(tok, texts[:batch], batch)[0][1])  # warm-up
    started = time.perf_counter()
    vectors: list[np.ndarray | None] = [None] * len(texts)
    batches = iter(sorted_batches(tok, texts, batch, sort))
    lock = threading.Lock()

    def work(sess: GraphRunner) -> None:
        while True:
            with lock:
                taken = next(batches, None)
            if taken is None:
                return
            index, feeds = taken
            for i, vector in zip(index, embed(sess, feeds), strict=True):
                vectors[i] = vector

    with ThreadPoolExecutor(sessions) as executor:
        list(executor.map(work, pool))
    elapsed = time.perf_counter() - started
    return len(texts) / elapsed, np.stack(vectors)  # type: ignore[arg-type]


def single_latency_ms(directory: Path, graph: str, texts: list[str], threads: int) -> float:
    """p50 of embedding one text at a time (tokenize + run + pool)."""
    sess = session(directory / graph, threads)
    tok = tokenizer(directory, 256)
    times = []
    for text in texts:
        started = time.perf_counter()
        embed(sess, sorted_batches(tok, [text], 1)[0][1])
        times.append(time.perf_counter() - started)
    return float(np.percentile(times[5:], 50) * 1000)


def cosine(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min()), float(cos.mean())
