"""GPU checks of issue 9, run only where ONNX Runtime has the CUDA provider (onnxruntime-gpu
and an NVIDIA GPU); elsewhere they are skipped with that reason. Results on a lent GPU go into
docs/scaling.md with the date and the machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from service.convert.export import export
from service.convert.plan import ExportRequest
from service.engine.loading import hub_options, load_model
from service.engine.runner import CUDA, OnnxRunner
from service.engine.scaling import batch_config, shape_grid
from service.models.store import resolve_reference
from service.settings import Settings
from tests import scale_models, tiny_models
from tests.conftest import serving

pytestmark = [
    pytest.mark.skipif(
        CUDA not in ort.get_available_providers(),
        reason="no CUDA GPU here: needs onnxruntime-gpu and an NVIDIA GPU "
        f"(this onnxruntime offers {ort.get_available_providers()})",
    ),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def test_served_on_cuda_with_exact_vectors(tiny_dense: tuple[Path, np.ndarray]) -> None:
    directory, table = tiny_dense
    with serving(models=[str(directory)], execution_provider="cuda") as client:
        listed = client.get("/models").json()["models"][0]
        ready = client.get("/ready").json()["models"]
        got = client.post("/embed/dense", json={"inputs": ["hello world", "the red cat"]})
    assert listed["provider"] == CUDA and next(iter(ready.values()))["provider"] == CUDA
    expected = [tiny_models.expected_dense(table, t) for t in ("hello world", "the red cat")]
    np.testing.assert_allclose(got.json()["embeddings"], expected, atol=1e-5)


def test_shapes_are_warmed_on_cuda_by_default(
    tiny_dense: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes: set[tuple[int, ...]] = set()
    original = OnnxRunner.run

    def run(self: OnnxRunner, feeds: Any) -> Any:
        shapes.add(tuple(feeds["input_ids"].shape))
        return original(self, feeds)

    monkeypatch.setattr(OnnxRunner, "run", run)
    settings = Settings(models=[str(tiny_dense[0])], execution_provider="cuda")
    model = load_model(resolve_reference(str(tiny_dense[0]), {}), settings, hub_options(settings))
    config = batch_config(settings, CUDA)
    grid = shape_grid(config.max_items, config.max_tokens, model.spec.max_length, 8)
    assert set(grid) <= shapes


def test_fp16_variant_on_cuda_agrees_with_fp32(tmp_path: Path) -> None:
    source = scale_models.build_tiny_bert(tmp_path / "src")
    out = tmp_path / "out"
    export(ExportRequest(source, out, name="tiny/bert", fp16=True))
    ids = np.array([[2, 5, 6, 7, 3], [2, 9, 3, 0, 0]], dtype=np.int64)
    feeds = {
        "input_ids": ids,
        "attention_mask": (ids > 0).astype(np.int64),
        "token_type_ids": np.zeros_like(ids),
    }
    cpu = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    gpu = ort.InferenceSession(str(out / "model.fp16.onnx"), providers=[CUDA])
    a, b = (s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()})[0] for s in (cpu, gpu))
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.999
