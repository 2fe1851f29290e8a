"""Front capacity (issue 21): what the request-handling processes can serve when inference
costs nothing. The tests' tiny dense model, `wrk` from Debian's packages as the load (a C
load generator: about 20 us of CPU a request, where a Python client takes 100), 64
connections, for 1, 2, ... workers up to the cores; one text per request (requests/s) and 32
per request (texts/s); and the CPU each process spent per request, read from /proc.

`python -m bench.front` runs this section alone; `make bench` runs it as section 7.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import served
from bench.report import say

SECONDS = float(os.environ.get("BENCH_FRONT_S", "8"))
CONNECTIONS = 64
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class FrontLoad:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: dict[str, float]  # "role part" -> CPU us per request, summed over its processes


def cpu_ticks(pid: int, tid: int | None = None) -> int:
    """utime + stime of a process, or of one of its threads."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def thread_ticks(pid: int) -> dict[str, int]:
    """A process's CPU split into its event loop (the main thread) and its other threads
    (tokenizing in a request-handling process, inference in the engine)."""
    split = {"loop": 0, "threads": 0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ticks = cpu_ticks(pid, int(task.name))
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
        split["loop" if int(task.name) == pid else "threads"] += ticks
    return split


def processes(pid: int) -> dict[int, str]:
    """The server's processes by role: the one process, or the supervisor's children."""
    import psutil

    children = psutil.Process(pid).children()
    if not children:
        return {pid: "single process"}
    roles = {}
    for child in children:
        line = " ".join(child.cmdline())
        roles[child.pid] = "engine" if "_engine" in line else "request handling"
    return roles


def wrk_script(directory: Path, texts: list[str], model: str) -> Path:
    body = json.dumps({"model": model, "input": texts})
    script = directory / f"post-{len(texts)}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return script


def run_wrk(url: str, script: Path, seconds: float) -> tuple[int, float, float, float, int]:
    """(requests, requests/s, p50 ms, p99 ms, non-2xx) of one wrk run."""
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", "-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> tuple[int, float, float, float, int]:
    """(requests, requests/s, p50 ms, p99 ms, non-2xx) from wrk's report (with --latency)."""
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return requests, rate, _ms(out, "50%"), _ms(out, "99%"), int(errors[1]) if errors else 0


def _ms(out: str, percentile: str) -> float:
    found = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", out)
    if found is None:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[found[2]]
    return float(found[1]) * scale


def measure(url: str, pid: int, script: Path) -> FrontLoad:
    run_wrk(url, script, 2)  # warm: connections, buffers, the engine's first batches
    roles = processes(pid)
    before = {p: thread_ticks(p) for p in roles}
    requests, rate, p50, p99, errors = run_wrk(url, script, SECONDS)
    spent: dict[str, float] = {}
    for process, role in roles.items():
        after = thread_ticks(process)
        for part, ticks in after.items():
            name = f"{role} {THREAD_NAMES[role][part]}"
            seconds = (ticks - before[process][part]) / TICK
            spent[name] = spent.get(name, 0.0) + seconds * 1e6 / max(requests, 1)
    return FrontLoad(rate, p50, p99, errors, spent)


THREAD_NAMES = {
    "single process": {"loop": "loop", "threads": "threads (tokenizing, inference)"},
    "request handling": {"loop": "loop", "threads": "tokenizing"},
    "engine": {"loop": "loop", "threads": "inference"},
}


def tiny_model(directory: Path) -> Path:
    from tests import tiny_models

    tiny_models.build_dense_model(directory)
    return directory


def front_lines(cores: int) -> dict[tuple[int, int], FrontLoad]:
    say("\n## 7. Front capacity: the tiny model, wrk with 64 connections\n")
    if shutil.which("wrk") is None:
        say("wrk is not installed (Debian: apt-get install wrk); section skipped")
        return {}
    say(
        "inference costs nothing here: these are the request-handling processes' limits. "
        "CPU us/request: per request served, summed over the processes of each role\n"
    )
    found: dict[tuple[int, int], FrontLoad] = {}
    with tempfile.TemporaryDirectory() as scratch:
        model = tiny_model(Path(scratch) / "tiny")
        texts = ["the cat sat on the mat while two red dogs ran"] * 32
        scripts = {n: wrk_script(Path(scratch), texts[:n], "tiny/dense") for n in (1, 32)}
        header = ("workers", "texts/request", "requests/s", "texts/s", "p50 ms", "p99 ms")
        say("| " + " | ".join((*header, "errors", "CPU us/request")) + " |")
        say("|" + " --- |" * (len(header) + 2))
        for workers in range(1, cores + 1):
            env = {"EMBED_MODELS": str(model), "EMBED_WORKERS": str(workers)}
            with served.server(env) as (url, pid):
                for per_request, script in scripts.items():
                    result = measure(f"{url}/v1/embeddings", pid, script)
                    found[(workers, per_request)] = result
                    cpu = ", ".join(f"{role} {us:.0f}" for role, us in result.cpu_us.items())
                    say(
                        f"| {workers} | {per_request} | {result.requests_per_s:.0f} | "
                        f"{result.requests_per_s * per_request:.0f} | {result.p50_ms:.1f} | "
                        f"{result.p99_ms:.1f} | {result.errors} | {cpu} |"
                    )
    if (1, 1) in found and (2, 1) in found:
        ratio = found[(2, 1)].requests_per_s / found[(1, 1)].requests_per_s
        say(f"\n2 workers against 1, one text a request: {ratio:.2f}x (target 1.4x)")
    return found


def short_path_lines(model: Path | None = None) -> None:
    """The JSON routes' short path (EMBED_JSON_SHORT_PATH) on and off, 1 and 2 workers."""
    if shutil.which("wrk") is None:
        return
    say("\n### The JSON routes' short path, on and off (one text a request)\n")
    say("| workers | short path | requests/s | CPU us/request |")
    say("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as scratch:
        model = model or tiny_model(Path(scratch) / "tiny")
        script = wrk_script(Path(scratch), ["the cat sat on the mat"], "tiny/dense")
        for workers in (1, 2):
            for on in ("true", "false"):
                env = {
                    "EMBED_MODELS": str(model),
                    "EMBED_WORKERS": str(workers),
                    "EMBED_JSON_SHORT_PATH": on,
                }
                with served.server(env) as (url, pid):
                    result = measure(f"{url}/v1/embeddings", pid, script)
                cpu = ", ".join(f"{role} {us:.0f}" for role, us in result.cpu_us.items())
                say(f"| {workers} | {on} | {result.requests_per_s:.0f} | {cpu} |")


def main() -> None:
    from bench.report import save

    front_lines(os.cpu_count() or 1)
    short_path_lines()
    save("front")


if __name__ == "__main__":
    main()
