"""Soak test: a bounded load of mixed routes and sizes on loopback against a real
`python -m service`, with a report of requests, errors, p50/p99 and the server's RSS.

    python tools/soak.py --seconds 600 --workers 8 [--url URL] [--passages FILE.jsonl]

Without --url it starts the service itself (EMBED_* variables from the environment, as
`make soak` sets them). The RSS target compares the end to the end of a warm-up (the first
10% of the run, at least 20 s, after a first pass of the largest batches), since allocators
and ONNX Runtime's arenas grow at first. The report has an RSS sample every 5 s.
Exit status 0 when the targets hold (no errors, RSS growth under 5%), else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make the repo's bench package importable

from bench import served  # noqa: E402

WORDS = [
    "search",
    "vector",
    "index",
    "query",
    "document",
    "model",
    "batch",
    "token",
    "service",
    "request",
    "answer",
    "river",
    "stone",
    "garden",
    "music",
    "winter",
    "paper",
    "engine",
]


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, seconds: float, status: str, error: str = "") -> None:
        with self.lock:
            self.latencies.setdefault(kind, []).append(seconds)
            self.statuses[status] += 1
            if error:
                self.failures += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{kind} {status}: {error}")


def load_texts(path: Path | None) -> list[str]:
    if path is not None and path.is_file():
        return [json.loads(line)["text"] for line in path.read_text().splitlines() if line]
    rng = random.Random(0)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 200))) for _ in range(2000)]


def requests_mix(texts: list[str], model: str) -> list[tuple[str, str, str, Any]]:
    """(kind, method, path, body or a function of rng giving it), drawn uniformly."""

    def batch(n: int) -> Callable[[random.Random], dict[str, Any]]:
        return lambda rng: {"model": model, "input": rng.sample(texts, n)}

    return [
        ("openai-1", "POST", "/v1/embeddings", batch(1)),
        ("openai-1", "POST", "/v1/embeddings", batch(1)),
        ("openai-8", "POST", "/v1/embeddings", batch(8)),
        ("openai-32", "POST", "/v1/embeddings", batch(32)),
        (
            "openai-b64",
            "POST",
            "/v1/embeddings",
            lambda rng: {
                "model": model,
                "input": rng.sample(texts, 4),
                "encoding_format": "base64",
            },
        ),
        (
            "dense-q",
            "POST",
            "/embed/dense",
            lambda rng: {"inputs": rng.sample(texts, 2), "input_type": "query", "dimensions": 128},
        ),
        ("models", "GET", "/v1/models", None),
        ("health", "GET", "/health", None),
        ("metrics", "GET", "/metrics", None),
    ]


def worker(
    url: str,
    mix: list[tuple[str, str, str, Any]],
    until: float,
    seed: int,
    tally: Tally,
    headers: dict[str, str],
) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
        while time.monotonic() < until:
            kind, method, path, body = rng.choice(mix)
            payload = body(rng) if callable(body) else body
            started = time.perf_counter()
            try:
                response = client.request(method, path, json=payload)
                ok = response.status_code < 300 and check(kind, response)
                tally.record(
                    kind,
                    time.perf_counter() - started,
                    str(response.status_code),
                    "" if ok else response.text[:200],
                )
            except httpx.HTTPError as exc:
                tally.record(kind, time.perf_counter() - started, "transport", repr(exc))


def check(kind: str, response: httpx.Response) -> bool:
    """A 2xx must carry a complete answer: as many vectors as inputs, all finite."""
    if not kind.startswith(("openai", "dense")):
        return True
    body = response.json()
    vectors = body["data"] if "data" in body else body["embeddings"]
    if kind == "openai-b64":
        return all(isinstance(v["embedding"], str) and v["embedding"] for v in vectors)
    values = [v["embedding"] if isinstance(v, dict) else v for v in vectors]
    return bool(values) and bool(np.isfinite(np.array(values, dtype=float)).all())


def service() -> AbstractContextManager[tuple[str, int]]:
    """The real service on a free loopback port (bench/served.py starts it for make bench too)."""
    return served.server({}, ready_timeout=300)


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else 0.0


def summarise(tally: Tally, seconds: float, rss: dict[str, float]) -> dict[str, Any]:
    every = [x for values in tally.latencies.values() for x in values]
    growth = (rss["end"] - rss["warm"]) / rss["warm"] * 100
    return {
        "seconds": round(seconds, 1),
        "requests": len(every),
        "requests_per_s": round(len(every) / seconds, 2),
        "errors": tally.failures,
        "statuses": dict(tally.statuses),
        "p50_ms": round(percentile(every, 50), 1),
        "p99_ms": round(percentile(every, 99), 1),
        "by_kind": {
            kind: {
                "n": len(v),
                "p50_ms": round(percentile(v, 50), 1),
                "p99_ms": round(percentile(v, 99), 1),
            }
            for kind, v in sorted(tally.latencies.items())
        },
        "rss_mib": {key: round(value, 1) for key, value in rss.items()},
        "rss_growth_after_warmup_pct": round(growth, 2),
        "error_samples": tally.errors[:5],
    }


def warm_up(url: str, texts: list[str], model: str, headers: dict[str, str]) -> None:
    """Send the largest shapes the mix can produce (32 of the longest texts) first: ONNX
    Runtime's memory arena grows to the biggest batch it has seen, then must stay flat."""
    longest = sorted(texts, key=len)[-32:]
    for _ in range(3):
        response = httpx.post(
            f"{url}/v1/embeddings",
            headers=headers,
            timeout=300,
            json={"model": model, "input": longest},
        )
        response.raise_for_status()


def sample_rss(pid: int | None, until: float, series: list[tuple[float, float]]) -> None:
    started = time.monotonic()
    while pid and time.monotonic() < until:
        series.append((round(time.monotonic() - started, 1), round(rss_mib(pid), 1)))
        time.sleep(5)


def run(url: str, pid: int | None, args: argparse.Namespace) -> dict[str, Any]:
    texts = load_texts(args.passages)
    model = httpx.get(f"{url}/v1/models", headers=auth(args)).json()["data"][0]["id"]
    tally = Tally()
    rss = {"start": rss_mib(pid)} if pid else {}
    warm_up(url, texts, model, auth(args))
    started = time.monotonic()
    until = started + args.seconds
    series: list[tuple[float, float]] = []
    threads = [
        threading.Thread(
            target=worker, args=(url, requests_mix(texts, model), until, seed, tally, auth(args))
        )
        for seed in range(args.workers)
    ]
    threads.append(threading.Thread(target=sample_rss, args=(pid, until, series)))
    for thread in threads:
        thread.start()
    time.sleep(min(args.seconds / 2, max(20.0, args.seconds * 0.1)))
    if pid:
        rss["warm"] = rss_mib(pid)
    for thread in threads:
        thread.join()
    if pid:
        rss["end"] = rss_mib(pid)
    else:
        rss = {"start": 0.0, "warm": 1.0, "end": 1.0}  # unknown: another machine's process
    report = summarise(tally, time.monotonic() - started, rss)
    report["rss_series_mib"] = series
    return report


def auth(args: argparse.Namespace) -> dict[str, str]:
    return {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--url", help="a running service (default: start one)")
    parser.add_argument("--api-key", default=os.environ.get("SOAK_API_KEY", ""))
    parser.add_argument("--passages", type=Path, help="JSON lines with a text field")
    parser.add_argument("--report", type=Path, default=ROOT / "bench-results" / "soak.json")
    args = parser.parse_args()
    if args.url:
        report = run(args.url, None, args)
    else:
        with service() as (url, pid):
            report = run(url, pid, args)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    ok = report["errors"] == 0 and report["rss_growth_after_warmup_pct"] < 5
    print(f"soak: {'PASS' if ok else 'FAIL'} (report in {args.report})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
