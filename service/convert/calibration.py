"""The range of a dense model's vectors, for int8 and uint8 outputs
(service/front/serving/quantize.py).

The fp32 graph embeds the calibration texts (the converter's check texts: a varied built-in
set plus any ``--check-texts``) in length-sorted batches; the vectors are pooled and
normalised as the service serves them by default, and their largest absolute value (the one
int8 scale), with each dimension's minimum and maximum, is recorded under ``calibration`` in
service_model.json.

``python -m service.convert.calibration DIR [--texts FILE]`` adds them to a directory that was
converted without them (the metadata's other fields are kept).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.convert.variants import CHECK_TEXTS, check_batches, read_texts
from service.models.kinds.dense import l2_normalize, pool
from service.models.store import METADATA_FILE


def dense_vectors(directory: Path, metadata: dict[str, Any], texts: list[str]) -> np.ndarray:
    """The fp32 graph's vectors for `texts` (in length order), as served by default."""
    import onnxruntime as ort

    spec = metadata["spec"]
    graph = metadata.get("variants", {}).get("fp32") or metadata.get("model_file", "model.onnx")
    session = ort.InferenceSession(str(directory / graph), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    limit = int(spec.get("max_length", 512))
    rows = []
    for feed in check_batches(directory, names, texts, max_length=limit):
        output = session.run(None, feed)[0]
        if output.ndim == 3:
            output = pool(output, feed["attention_mask"], str(spec.get("pooling", "mean")))
        rows.append(np.asarray(output, dtype=np.float32))
    vectors = np.concatenate(rows)
    return l2_normalize(vectors) if spec.get("normalize", True) else vectors


def calibrate(directory: Path, metadata: dict[str, Any], texts: Sequence[str]) -> dict[str, Any]:
    """Record the range of a dense model directory's vectors in `metadata`."""
    vectors = dense_vectors(directory, metadata, list(texts))
    metadata["calibration"] = {
        "texts": int(vectors.shape[0]),
        "abs_max": float(np.abs(vectors).max()),
        "min": [float(v) for v in vectors.min(axis=0)],
        "max": [float(v) for v in vectors.max(axis=0)],
    }
    return metadata


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.convert.calibration",
        description="Record a dense model directory's int8 calibration range.",
    )
    parser.add_argument("directory", type=Path, help="a converted model directory")
    parser.add_argument(
        "--texts", type=Path, action="append", default=[], help="JSON-lines or text file"
    )
    args = parser.parse_args(argv)
    path = args.directory / METADATA_FILE
    metadata = json.loads(path.read_text())
    if metadata["spec"].get("kind") != "dense":
        raise SystemExit(f"{args.directory} is not a dense model directory")
    texts = CHECK_TEXTS + [text for file in args.texts for text in read_texts(file)]
    calibrate(args.directory, metadata, texts)
    path.write_text(json.dumps(metadata, indent=2) + "\n")
    print(json.dumps({"directory": str(args.directory), "texts": metadata["calibration"]["texts"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
