"""bench.inprocess, the ceiling's measuring loop, on the tiny model: several sessions give
the same vectors in the same order as one, and the layouts cover the cores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bench.__main__ as bench_main
from bench import gpu, inprocess
from service.engine.runner import CPU, OnnxRunner
from tests.tiny_models import WORDS


def test_several_sessions_embed_every_text_in_input_order(
    tiny_dense: tuple[Path, np.ndarray],
) -> None:
    directory, table = tiny_dense
    rng = np.random.default_rng(7)
    texts = [" ".join(rng.choice(WORDS[4:26], size=int(rng.integers(1, 12)))) for _ in range(41)]
    rate, one = inprocess.throughput(directory, "model.onnx", texts, 4, 1)
    assert rate > 0 and one.shape == (41, table.shape[1])
    for sessions, sort in ((2, True), (3, False)):
        _, many = inprocess.throughput(
            directory, "model.onnx", texts, 4, 1, sort, sessions=sessions
        )
        np.testing.assert_allclose(many, one, rtol=1e-6, atol=1e-6)
    # each vector is its own text's: a text embedded alone gives the same row
    _, alone = inprocess.throughput(directory, "model.onnx", texts[17:18], 1, 1)
    np.testing.assert_allclose(alone[0], one[17], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("cores", "expected"),
    [
        (1, [(1, 1)]),
        (2, [(1, 2), (2, 1)]),
        (8, [(1, 8), (2, 4), (4, 2), (8, 1)]),
        (16, [(1, 16), (2, 8), (4, 4), (8, 2), (16, 1)]),
    ],
)
def test_layouts_split_the_cores_between_sessions(
    monkeypatch: pytest.MonkeyPatch, cores: int, expected: list[tuple[int, int]]
) -> None:
    monkeypatch.setattr(bench_main, "THREADS", cores)
    assert bench_main.layouts() == expected


def test_the_ceiling_measured_again_is_its_own_configuration_on_the_real_loop(
    tiny_dense: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """make bench re-measures the ceiling beside each served load: the same batch, layout and
    spinning that won, length-sorted, through inprocess.throughput itself."""
    directory, _ = tiny_dense
    monkeypatch.setattr(bench_main, "MODEL_DIR", directory)
    calls: list[tuple[Any, ...]] = []
    original = inprocess.throughput

    def recording(*args: Any, **kwargs: Any) -> tuple[float, np.ndarray]:
        calls.append(args + tuple(sorted(kwargs.items())))
        return original(*args, **kwargs)

    monkeypatch.setattr(inprocess, "throughput", recording)
    ceiling = bench_main.Ceiling(rate=1.0, batch=4, sessions=2, threads=1, spinning=False)
    texts = [" ".join(WORDS[4 : 4 + n]) for n in range(1, 20)]
    assert ceiling.again(texts, "model.onnx") > 0
    assert calls == [(directory, "model.onnx", texts, 4, 1, True, False, 2)]


def test_the_gpu_bench_times_ten_new_shapes_then_the_same_again(
    tiny_dense: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes: list[tuple[int, ...]] = []
    original = OnnxRunner.run

    def run(self: OnnxRunner, feeds: Any) -> Any:
        shapes.append(tuple(feeds["input_ids"].shape))
        return original(self, feeds)

    monkeypatch.setattr(OnnxRunner, "run", run)
    fresh, warmed = gpu.shape_cost_ms(tiny_dense[0] / "model.onnx", provider=CPU)
    expected = [(rows, 64) for rows in range(33, 43)]
    assert shapes == expected + expected and fresh > 0 and warmed > 0


def test_graph_variants_are_measured_in_turn_and_their_median_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    # passes in call order: fp32, int8, fp32, int8, fp32, int8
    rates = iter([100.0, 130.0, 90.0, 160.0, 110.0, 150.0])

    def throughput(directory: Path, graph: str, texts: list[str], *_: Any) -> Any:
        calls.append(graph)
        return next(rates), np.full((len(texts), 2), len(calls), dtype=np.float32)

    monkeypatch.setattr(inprocess, "throughput", throughput)
    graphs = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    measured = bench_main.variant_rates(["a", "b"], graphs, batch=2, rounds=3)
    assert calls == ["model.onnx", "model.int8.onnx"] * 3
    assert measured["fp32"][0] == 100.0 and measured["int8"][0] == 150.0
    # the vectors of each graph's first pass
    assert measured["fp32"][1][0, 0] == 1 and measured["int8"][1][0, 0] == 2
