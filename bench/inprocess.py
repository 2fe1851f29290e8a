"""In-process figures: tokenizers + ONNX Runtime with no service around them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.corpus import sorted_batches, tokenizer


def session(graph: Path, threads: int, spinning: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def embed(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> np.ndarray:
    names = {i.name for i in sess.get_inputs()}
    hidden = sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]
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
) -> tuple[float, np.ndarray]:
    """Texts/s (tokenization included) and the vectors in input order."""
    sess = session(directory / graph, threads, spinning)
    tok = tokenizer(directory, 256)
    embed(sess, sorted_batches(tok, texts[:batch], batch)[0][1])  # warm-up
    started = time.perf_counter()
    vectors: list[np.ndarray | None] = [None] * len(texts)
    for index, feeds in sorted_batches(tok, texts, batch, sort):
        for i, vector in zip(index, embed(sess, feeds), strict=True):
            vectors[i] = vector
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


def replicas(
    directory: Path, graph: str, texts: list[str], batch: int, sessions: int, threads: int
) -> float:
    """Texts/s with `sessions` sessions of `threads` threads each, fed from one queue."""
    from concurrent.futures import ThreadPoolExecutor

    pool = [session(directory / graph, threads) for _ in range(sessions)]
    tok = tokenizer(directory, 256)
    batches = sorted_batches(tok, texts, batch)
    for sess in pool:
        embed(sess, batches[0][1])
    started = time.perf_counter()
    with ThreadPoolExecutor(sessions) as executor:
        list(
            executor.map(
                lambda pair: embed(pool[pair[0] % sessions], pair[1][1]), enumerate(batches)
            )
        )
    return len(texts) / (time.perf_counter() - started)
