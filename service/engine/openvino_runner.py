"""One OpenVINO compiled model: the only place the service touches openvino.

It serves the graph variants written as OpenVINO IR (``model.ov-int8.xml``: NNCF's static
int8, service/convert/openvino_int8.py) with the same three members the batcher and the kinds
use of an ONNX Runtime runner (``run``, ``input_names``, ``output_names``). openvino is an
optional extra (``pip install '.[openvino]'``): a process that never loads such a graph never
imports it.

The fp32 parts of the graph run in fp32 (``INFERENCE_PRECISION_HINT``): on a CPU with bf16
units OpenVINO would otherwise run them in bf16 and move the vectors. One stream per runner,
as many threads as its session layout gives it, and no pinning (the cores are shared with the
event loop and tokenization).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.errors import ModelLoadError

SUFFIX = ".xml"  # a graph file with this suffix is OpenVINO IR (its weights beside it, .bin)
PROVIDER = "OpenVINO CPU"


def is_openvino_graph(path: Path) -> bool:
    return path.suffix == SUFFIX


@functools.cache
def core() -> Any:
    try:
        import openvino as ov
    except ImportError as exc:
        raise ModelLoadError(
            "this graph is OpenVINO IR, and openvino is not installed: "
            "pip install 'embedding-service[openvino]' (or serve another variant)"
        ) from exc
    return ov.Core()


def compile_options(threads: int) -> dict[str, Any]:
    return {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": False,
    }


class OpenVinoRunner:
    def __init__(self, path: Path, *, threads: int) -> None:
        try:
            model = core().read_model(str(path))
            self.compiled = core().compile_model(model, "CPU", compile_options(threads))
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"could not load OpenVINO graph {path}: {exc}") from exc
        self.request = self.compiled.create_infer_request()
        self.provider = PROVIDER
        self.threads = threads
        self.weights = None
        self.input_names = tuple(port.get_any_name() for port in self.compiled.inputs)
        self.output_names = tuple(port.get_any_name() for port in self.compiled.outputs)

    def run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        """Run the graph on the feeds it declares as inputs (extra feeds are ignored)."""
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise ValueError(f"graph inputs without a feed: {missing}")
        result = self.request.infer({name: feeds[name] for name in self.input_names})
        return [np.array(result[port]) for port in self.compiled.outputs]
