"""One ONNX Runtime session: the only place the service touches onnxruntime.

Every kind runs through this runner; kinds differ only in what they feed it and how they
read what it returns.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.engine import preemption
from service.errors import ModelLoadError

OPTIMIZATION_LEVELS: dict[str, Callable[[Any], Any]] = {
    "disable": lambda ort: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def choose_provider(requested: str) -> str:
    """Map the execution_provider setting to an ORT provider; a missing GPU is an error."""
    providers = available_providers()
    if requested == "cuda" and CUDA not in providers:
        raise ModelLoadError(
            "execution_provider=cuda but this onnxruntime has no CUDA provider "
            f"(it has {providers}); install onnxruntime-gpu and check the GPU driver"
        )
    if requested in ("cuda", "auto") and CUDA in providers:
        preload_cuda()
        return CUDA
    return CPU


@functools.cache
def preload_cuda() -> None:
    """Load CUDA and cuDNN before the first CUDA session. onnxruntime-gpu from PyPI finds them
    in the nvidia-* wheels only this way (ONNX Runtime >= 1.21); a CUDA on the library path,
    as in Dockerfile.gpu, is found either way."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        preload()


def default_threads(replicas: int) -> int:
    return max(1, (os.cpu_count() or 1) // replicas)


class SharedWeights:
    """One copy of a graph's weights as ONNX Runtime values, for several sessions of the
    same graph (service/engine/weights.py). The arrays stay referenced here: ONNX Runtime
    reads CPU values in place, without a copy."""

    def __init__(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        import onnxruntime as ort

        self.arrays = dict(arrays)
        self.values = {
            name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in self.arrays.items()
        }

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.arrays.values())


class OnnxRunner:
    def __init__(
        self,
        path: Path,
        *,
        provider: str,
        threads: int,
        spinning: bool = False,
        optimization: str = "all",
        memory_arena: bool = True,
        weights: SharedWeights | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization](ort)
        options.enable_cpu_mem_arena = memory_arena
        options.log_severity_level = 3
        # Spinning worker threads burn the cores that the event loop and tokenization need.
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        if weights is not None:
            for name, value in weights.values.items():
                options.add_initializer(name, value)
        providers = [provider] if provider == CPU else [provider, CPU]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            raise ModelLoadError(f"could not load ONNX graph {path}: {exc}") from exc
        if self.session.get_providers()[0] != provider:
            raise ModelLoadError(
                f"{path}: asked for {provider} but ONNX Runtime gave {self.session.get_providers()}"
            )
        self.provider = provider
        self.threads = threads
        self.weights = weights  # the session reads them in place: they live as long as it
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        """Run the graph on the feeds it declares as inputs (extra feeds are ignored). In a
        batch that can be stopped (preemption.current()), a requested stop ends the run at
        ONNX Runtime's next node with preemption.Interrupted."""
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise ValueError(f"graph inputs without a feed: {missing}")
        used = {name: feeds[name] for name in self.input_names}
        stop = preemption.current()
        if stop is None:
            outputs: Sequence[npt.NDArray[Any]] = self.session.run(None, used)
        else:
            outputs = self._run_stoppable(used, stop)
        return [np.asarray(output) for output in outputs]

    def _run_stoppable(
        self, feeds: Mapping[str, npt.NDArray[Any]], stop: preemption.Stop
    ) -> Sequence[npt.NDArray[Any]]:
        import onnxruntime as ort

        options = ort.RunOptions()  # its own: a terminate flag stays set on the options

        def terminate() -> None:
            options.terminate = True

        with stop.armed(terminate):
            try:
                outputs: Sequence[npt.NDArray[Any]] = self.session.run(None, feeds, options)
            except Exception:
                if stop.requested:  # ONNX Runtime's "Exiting due to terminate flag"
                    raise preemption.Interrupted from None
                raise
        return outputs
