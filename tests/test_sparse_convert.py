"""`python -m service convert --kind bm42` on a tiny random BERT: one output `attention_6`
(batch, heads, seq, seq) that equals PyTorch's last-layer attentions, and a spec that
serves as a BM42 model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.convert.export import export
from service.convert.plan import ExportRequest
from tests import tiny_models
from tests.exporting import EXPORT_WARNINGS

pytestmark = EXPORT_WARNINGS


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tiny_models.write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32}))
    return directory


def test_bm42_export_outputs_the_last_attention_layer(tiny_bert: Path, tmp_path: Path) -> None:
    import torch
    import transformers

    metadata = export(ExportRequest(tiny_bert, tmp_path / "out", kind="bm42", name="tiny/bm42"))
    assert metadata["spec"]["kind"] == "sparse" and metadata["spec"]["max_length"] == 32
    assert metadata["spec"]["options"]["family"] == "bm42"
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["attention_6"]
    ids = np.array([[2, 5, 6, 7, 3]], dtype=np.int64)
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }
    got = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    model = transformers.BertModel.from_pretrained(str(tiny_bert), attn_implementation="eager")
    with torch.no_grad():
        expected = (
            model(**{k: torch.from_numpy(v) for k, v in feeds.items()}, output_attentions=True)
            .attentions[-1]
            .numpy()
        )
    assert got.shape == (1, 4, 5, 5)
    np.testing.assert_allclose(got, expected, atol=1e-6)
