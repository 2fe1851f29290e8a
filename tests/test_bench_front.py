"""make bench's front-capacity section reads wrk's report (bench/front.py)."""

from __future__ import annotations

import math

from bench.front import parse_wrk

REPORT = """Running 8s test @ http://127.0.0.1:41233/v1/embeddings
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.01ms    4.30ms  61.20ms   80.11%
    Req/Sec     5.32k   612.40     6.10k    71.25%
  Latency Distribution
     50%   11.52ms
     75%   13.90ms
     90%   16.70ms
     99%    1.02s
  42399 requests in 8.00s, 31.20MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   5299.12
Transfer/sec:      3.90MB
"""


def test_wrk_report_is_read_with_its_units() -> None:
    requests, rate, p50, p99, errors = parse_wrk(REPORT)
    assert (requests, rate, errors) == (42399, 5299.12, 3)
    assert math.isclose(p50, 11.52) and math.isclose(p99, 1020.0)


def test_a_report_without_errors_or_latencies() -> None:
    plain = REPORT.replace("  Non-2xx or 3xx responses: 3\n", "").replace(
        "     50%   11.52ms\n", ""
    )
    requests, _, p50, _, errors = parse_wrk(plain)
    assert requests == 42399 and errors == 0 and math.isnan(p50)
