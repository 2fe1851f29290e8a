"""`make bench` (python -m bench): in-process ceiling, served figures and their ratios, graph
variants, a FastEmbed peer line where it installs, and memory under load.

Environment: BENCH_PASSAGES (default 1024), BENCH_SOAK_S (default 300: the 5-minute RSS
check), BENCH_MODEL_DIR (default models/all-MiniLM-L6-v2), BENCH_THREADS (default: cores).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import bulk, corpus, front, gpu, inprocess, served
from bench.report import save, say
from service.engine.runner import CPU
from service.engine.scaling import session_layout
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = Path(os.environ.get("BENCH_MODEL_DIR", ROOT / "models" / "all-MiniLM-L6-v2"))
PASSAGES = int(os.environ.get("BENCH_PASSAGES", "1024"))
SOAK_S = float(os.environ.get("BENCH_SOAK_S", "300"))
THREADS = int(os.environ.get("BENCH_THREADS", str(os.cpu_count() or 1)))


def row(*cells: object) -> None:
    say("| " + " | ".join(str(c) for c in cells) + " |")


def main() -> None:
    if gpu.has_cuda() and os.environ.get("BENCH_CPU") != "1":
        raise SystemExit(gpu.main())  # the GPU figures (bench/gpu.py); BENCH_CPU=1: these
    metadata = json.loads((MODEL_DIR / "service_model.json").read_text())
    name = metadata["spec"]["name"]
    default = metadata["variants"][metadata["default_cpu"]]
    passages = corpus.load("passages.jsonl", PASSAGES)
    queries = corpus.load("queries.jsonl", PASSAGES)
    say(f"# make bench: {name}, {time.strftime('%Y-%m-%d %H:%M')}")
    say(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; "
        f"{len(passages)} passages, {len(queries)} queries; default graph {default}"
    )
    changed = sorted(key for key in os.environ if key.startswith("EMBED_"))
    level = Settings().log_level  # the service's default unless EMBED_LOG_LEVEL is set
    say(
        "served with the service's default settings"
        + (f" except {', '.join(changed)} from the environment" if changed else "")
        + f"; log level {level}"
        + (" (an access line per request)" if level in ("debug", "info") else "")
    )
    ceiling, single_batch = ceiling_line(passages, default)
    single_ms = inprocess.single_latency_ms(MODEL_DIR, default, passages[:200], THREADS)
    say(f"in-process one passage at a time: p50 {single_ms:.1f} ms")
    served_lines(name, passages, ceiling, default, single_ms)
    variants_lines(passages, queries, single_batch)
    peer_line(name, passages)
    memory_lines(name, passages)
    front.front_lines(THREADS)
    front.short_path_lines()
    bulk.bulk_lines(name, passages, queries, ceiling.rate)
    save("bench")


def layouts() -> list[tuple[int, int]]:
    """(sessions, threads each) that use the cores: one wide session, single-thread sessions,
    and splits between them."""
    counts = sorted({1, 2, THREADS // 4 or 1, THREADS // 2 or 1, THREADS})
    return [(sessions, max(1, THREADS // sessions)) for sessions in counts if sessions <= THREADS]


@dataclass(frozen=True)
class Ceiling:
    """The in-process ceiling: its rate, and the configuration that reached it."""

    rate: float
    batch: int
    sessions: int
    threads: int
    spinning: bool

    def again(self, passages: list[str], graph: str) -> float:
        """The same configuration measured once more (passages/s)."""
        rate, _ = inprocess.throughput(
            MODEL_DIR, graph, passages, self.batch, self.threads, True, self.spinning, self.sessions
        )
        return rate


def ceiling_line(passages: list[str], graph: str) -> tuple[Ceiling, int]:
    """The best in-process figure over batch sizes and session layouts, with threads spinning
    too where sessions have several; and the best batch size for one session on all the
    threads (what the graph variants use)."""
    say("\n## 1. In-process ceiling (tokenizers + ONNX Runtime, length-sorted batches)\n")
    say(f"passages/s by batch size and sessions x threads on {THREADS} cores\n")
    split = layouts()
    row("batch", *(f"{s} x {t}" for s, t in split))
    row("---", *("---" for _ in split))
    best_of = {layout: (0.0, 0) for layout in split}  # (rate, batch) per layout
    for batch in (1, 2, 4, 8, 16, 32, 64):
        rates = []
        for sessions, threads in split:
            rate, _ = inprocess.throughput(
                MODEL_DIR, graph, passages, batch, threads, sessions=sessions
            )
            rates.append(f"{rate:.1f}")
            best_of[(sessions, threads)] = max(best_of[(sessions, threads)], (rate, batch))
        row(batch, *rates)
    # (rate, batch, layout, spinning) of every layout's best, and of it with threads spinning
    candidates = [(rate, batch, layout, False) for layout, (rate, batch) in best_of.items()]
    for (sessions, threads), (_, batch) in best_of.items():
        if threads > 1:
            spinning, _ = inprocess.throughput(
                MODEL_DIR, graph, passages, batch, threads, spinning=True, sessions=sessions
            )
            say(f"\n{sessions} x {threads} at batch {batch}, threads spinning: {spinning:.1f}")
            candidates.append((spinning, batch, (sessions, threads), True))
    rate, batch, (sessions, threads), spinning_won = max(candidates)
    unsorted, _ = inprocess.throughput(
        MODEL_DIR, graph, passages, batch, threads, False, spinning_won, sessions
    )
    how = ", threads spinning" if spinning_won else ""
    say(
        f"\nceiling: {rate:.1f} passages/s, {sessions} x {threads} at batch {batch}{how} "
        f"(arrival order, unsorted: {unsorted:.1f}/s)"
    )
    layout, adaptive = session_layout(Settings(), CPU, "dense", cores=THREADS)
    if adaptive:
        split_text = f"1 x {layout[0]} for a lone batch, {len(layout) - 1} x 1 under load"
        say(f"the service's default for a dense model (adaptive sessions): {split_text}")
    else:
        say(f"the service's default for a dense model: {len(layout)} x {layout[0]}")
    return Ceiling(rate, batch, sessions, threads, spinning_won), best_of[(1, THREADS)][1]


# Where the default is adaptive sessions (one wide session and single-thread ones), the two
# fixed layouts it chooses between are measured beside it: one session on all the threads
# (latency) and single-thread replicas (throughput) (docs/scaling.md, "Adaptive sessions").
FIXED_LAYOUTS = (
    ("EMBED_ADAPTIVE_SESSIONS=false: ", {"EMBED_ADAPTIVE_SESSIONS": "false"}),
    ("EMBED_REPLICAS=2: ", {"EMBED_REPLICAS": "2"}),
)
DEFAULT_LOADS = ((1, 1), (1, 8), (1, 32), (1, 64), (32, 4))
FIXED_LOADS = ((1, 1), (1, 32))


def served_lines(
    name: str, passages: list[str], ceiling: Ceiling, graph: str, single_ms: float
) -> None:
    """Each load, with its rate as a ratio to the ceiling, and to the ceiling's configuration
    measured again right after it: this machine's speed drifts within minutes, and the
    ceiling itself is the best of many noisy runs. Then 32 clients with two request-handling
    processes (EMBED_WORKERS=2); then the int8 opt-ins beside the default (int8_served_lines)."""
    say("\n## 2-3. Served over HTTP on loopback (same model, same machine)\n")
    say(
        "ratio to ceiling: to section 1's figure; beside: to the ceiling's configuration on "
        "the same graph, measured again just after the load\n"
    )
    row("load", "passages/s", "p50 ms", "p99 ms", "errors", "ratio to ceiling", "beside")
    row("---", "---", "---", "---", "---", "---", "---")
    setups: list[tuple[str, dict[str, str], tuple[tuple[int, int], ...]]] = [
        ("", {}, DEFAULT_LOADS)
    ]
    if session_layout(Settings(), CPU, "dense", cores=THREADS)[1]:
        setups += [(label, env, FIXED_LOADS) for label, env in FIXED_LAYOUTS]
    setups.append(("EMBED_WORKERS=2: ", {"EMBED_WORKERS": "2"}, ((1, 32),)))
    for label, env, loads in setups:
        with served.server({"EMBED_MODELS": f"{name}@{MODEL_DIR}", **env}) as (url, _):
            for per_request, concurrency in loads:
                texts = passages[:256] if concurrency == 1 else passages
                result = served.load(url, name, texts, per_request, concurrency)
                served_row(label, per_request, concurrency, result, ceiling, passages, graph)
                if concurrency == 1:
                    over = result.p50_ms - single_ms
                    say(f"|  (concurrency 1: p50 {over:+.1f} ms over in-process) | | | | | | |")
    int8_served_lines(name, passages)


INT8_VARIANTS = ("openvino-int8", "int8")  # served beside the fp32 default when converted
SERVED_ROUNDS = 3


def int8_served_lines(name: str, passages: list[str]) -> None:
    """The int8 opt-ins served at 32 clients (one passage a request) beside the fp32 default,
    in the same run: every server up at once, the loads taken in turn (the default, then each
    variant), SERVED_ROUNDS times; each round's ratio to the default's load just before it,
    and their median. This machine's speed drifts within minutes: only such ratios compare."""
    variants = json.loads((MODEL_DIR / "service_model.json").read_text())["variants"]
    chosen = [variant for variant in INT8_VARIANTS if variant in variants]
    if not chosen:
        return
    say(f"\nint8 opt-ins at 1/request x 32, beside the default, {SERVED_ROUNDS} rounds in turn\n")
    row("graph", "passages/s (median)", "p50 ms", "p99 ms", "errors", "x fp32 default (median)")
    row("---", "---", "---", "---", "---", "---")
    references = {"fp32 default": f"{name}@{MODEL_DIR}"} | {
        variant: f"{name}@{MODEL_DIR}:{variant}" for variant in chosen
    }
    with ExitStack() as stack:
        urls = {
            label: stack.enter_context(served.server({"EMBED_MODELS": reference}))[0]
            for label, reference in references.items()
        }
        results: dict[str, list[served.Load]] = {label: [] for label in urls}
        ratios: dict[str, list[float]] = {label: [] for label in urls}
        for _ in range(SERVED_ROUNDS):
            for label, url in urls.items():
                results[label].append(served.load(url, name, passages, 1, 32))
                base = results["fp32 default"][-1].passages_per_s
                ratios[label].append(results[label][-1].passages_per_s / base)
    for label, loads in results.items():
        rates = [load.passages_per_s for load in loads]
        middle = loads[int(np.argsort(rates)[len(rates) // 2])]
        row(
            f"{name}:{label}" if label != "fp32 default" else label,
            f"{np.median(rates):.1f} ({', '.join(f'{r:.0f}' for r in rates)})",
            f"{middle.p50_ms:.1f}",
            f"{middle.p99_ms:.1f}",
            sum(load.errors for load in loads),
            f"{np.median(ratios[label]):.2f} ({', '.join(f'{r:.2f}' for r in ratios[label])})",
        )


def served_row(
    label: str,
    per_request: int,
    concurrency: int,
    result: served.Load,
    ceiling: Ceiling,
    passages: list[str],
    graph: str,
) -> None:
    """One load's row: its ratio to section 1's ceiling, and to the ceiling's configuration
    on the same graph measured again right after it."""
    beside = ceiling.again(passages, graph)
    row(
        f"{label}{per_request}/request x {concurrency}",
        f"{result.passages_per_s:.1f}",
        f"{result.p50_ms:.1f}",
        f"{result.p99_ms:.1f}",
        result.errors,
        f"{result.passages_per_s / ceiling.rate:.2f}",
        f"{result.passages_per_s / beside:.2f} (of {beside:.1f})",
    )


# A pass over the 1,024 queries lasts about a second, and this machine's speed drifts within
# seconds: measured once each, int8 read 1.24x fp32 on queries in one run and 1.49x in the
# run before. Each graph is measured this many times, the graphs in turn, and the median kept.
VARIANT_ROUNDS = 3


def variant_rates(
    texts: list[str], graphs: dict[str, str], batch: int, rounds: int = VARIANT_ROUNDS
) -> dict[str, tuple[float, np.ndarray]]:
    """Each graph's median texts/s over `rounds` passes, taken in turn (all graphs once, then
    all again), and its vectors from the first pass."""
    rates: dict[str, list[float]] = {name: [] for name in graphs}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for name, graph in graphs.items():
            rate, found = inprocess.throughput(MODEL_DIR, graph, texts, batch, THREADS)
            rates[name].append(rate)
            vectors.setdefault(name, found)
    return {name: (float(np.median(rates[name])), vectors[name]) for name in graphs}


def variants_lines(passages: list[str], queries: list[str], batch: int) -> None:
    metadata = json.loads((MODEL_DIR / "service_model.json").read_text())
    say("\n## 5. Graph variants (in-process, agreement with fp32 on this corpus)\n")
    say(f"texts/s: the median of {VARIANT_ROUNDS} passes, the graphs measured in turn\n")
    row("variant", "corpus", "texts/s", "x fp32", "min cosine", "mean cosine")
    row("---", "---", "---", "---", "---", "---")
    graphs = {"fp32": "model.onnx"} | {
        variant: graph
        for variant, graph in metadata["variants"].items()
        if variant not in ("fp32", "fp16")
    }
    for label, texts in (("passages", passages), ("queries", queries)):
        measured = variant_rates(texts, graphs, batch)
        base_rate, base = measured["fp32"]
        row("fp32", label, f"{base_rate:.1f}", "1.00", "1", "1")
        for variant, (rate, vectors) in measured.items():
            if variant == "fp32":
                continue
            low, mean = inprocess.cosine(base, vectors)
            row(
                variant,
                label,
                f"{rate:.1f}",
                f"{rate / base_rate:.2f}",
                f"{low:.4f}",
                f"{mean:.5f}",
            )
    say(
        f"\ndefault on CPU: {metadata['default_cpu']} (the default gives the model's own "
        "vectors; int8 is an opt-in, NAME:int8)"
    )


def token_output_dir(name: str) -> Path:
    """FastEmbed pools in numpy, so it needs the graph with token outputs: convert it once."""
    directory = MODEL_DIR.parent / f"{MODEL_DIR.name}-tokens"
    if not (directory / "service_model.json").is_file():
        source = json.loads((MODEL_DIR / "service_model.json").read_text())["export"]["source"]
        command = [sys.executable, "-m", "service", "convert", source, str(directory)]
        subprocess.run(
            [*command, "--name", name, "--token-outputs"], check=True, capture_output=True
        )
    return directory


def peer_line(name: str, passages: list[str]) -> None:
    say("\n## 4. Peer: FastEmbed in-process on the same model file\n")
    try:
        from fastembed import TextEmbedding
    except ImportError:
        say("fastembed is not installed here (pip install fastembed to add this line)")
        return
    directory = token_output_dir(name)
    model = TextEmbedding(
        model_name=name,
        specific_model_path=str(directory),
        local_files_only=True,
        threads=THREADS,
    )
    list(model.embed(passages[:32], batch_size=32))
    started = time.perf_counter()
    list(model.embed(passages, batch_size=32))
    rate = len(passages) / (time.perf_counter() - started)
    ours, _ = inprocess.throughput(directory, "model.onnx", passages, 32, THREADS)
    say(
        f"same fp32 graph with token outputs, batches of 32: FastEmbed {rate:.1f} passages/s, "
        f"this project's in-process path {ours:.1f} passages/s ({ours / rate:.2f}x)"
    )


def sampled_load(
    url: str, name: str, passages: list[str], seconds: float, pid: int
) -> tuple[served.Load, list[float]]:
    """32 clients for ``seconds``, with the server's RSS sampled every 2 s meanwhile."""
    samples: list[float] = []
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(served.load, url, name, passages, 1, 32, seconds)
        while not running.done():
            samples.append(served.rss_mb(pid)[0])
            futures_wait([running], timeout=2)
        return running.result(), samples


def memory_lines(name: str, passages: list[str]) -> None:
    say(f"\n## 6. Server memory under {SOAK_S:.0f} s of load (1 passage/request x 32)\n")
    # The warm-up meets the batch shapes the load will bring: the longest passages first (the
    # biggest batches), then one pass over the corpus (the mix of lengths). What grows after
    # that is what a leak or fragmentation would look like.
    longest = sorted(passages, key=len, reverse=True)[:256]
    with served.server({"EMBED_MODELS": f"{name}@{MODEL_DIR}"}) as (url, pid):
        cold, _ = served.rss_mb(pid)
        served.load(url, name, longest, 1, 32)
        biggest, _ = served.rss_mb(pid)
        served.load(url, name, passages, 1, 32)
        warm, _ = served.rss_mb(pid)
        first, early_samples = sampled_load(url, name, passages, SOAK_S / 5, pid)
        early, _ = served.rss_mb(pid)
        result, samples = sampled_load(url, name, passages, SOAK_S * 4 / 5, pid)
        after, peak = served.rss_mb(pid)
    errors = first.errors + result.errors
    say(
        f"RSS when ready {cold:.0f} MiB, after the longest passages {biggest:.0f} MiB, after "
        f"warm-up {warm:.0f} MiB, after {SOAK_S / 5:.0f} s {early:.0f} MiB, after {SOAK_S:.0f} s "
        f"{after:.0f} MiB ({(after / warm - 1) * 100:+.1f}% over warm-up), peak {peak:.0f} MiB; "
        f"{result.passages_per_s:.1f} passages/s, {errors} errors"
    )
    # Single samples swing by about 10 MiB under load; medians over the first and the last
    # fifth of the load (a sample every 2 s) compare like with like.
    start = float(np.median(early_samples))
    end = float(np.median(samples[-max(1, len(early_samples)) :]))
    say(
        f"median RSS over the first {SOAK_S / 5:.0f} s of load {start:.0f} MiB, over the last "
        f"{SOAK_S / 5:.0f} s {end:.0f} MiB ({(end / start - 1) * 100:+.1f}%); all samples "
        f"{min(early_samples + samples):.0f}-{max(early_samples + samples):.0f} MiB"
    )


if __name__ == "__main__":
    main()
