"""A model ready to serve: its spec, files, tokenizer, resources, and (in the engine) its
sessions; its batcher is the engine's, or a request-handling process's link to it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from service.errors import InferenceFailed
from service.models.catalogue import ModelSpec, TokenLimit
from service.models.store import EXACT_COSINE
from service.models.text import TextEncoder, load_text_encoder

if TYPE_CHECKING:
    from service.models.kinds.contract import KindHandler

# Graph variants whose vectors depend on how wide their batch is padded (measured: the int8
# graph on OpenVINO 2026.4; ONNX Runtime's own int8 does not move).
BATCH_DEPENDENT_VARIANTS = frozenset({"openvino-int8"})


class Runner(Protocol):
    """What runs a batch: an ONNX Runtime session (service/engine/runner.py), or a model
    computed without one (service/models/kinds/static.py)."""

    @property
    def output_names(self) -> tuple[str, ...]: ...

    def run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]: ...


class GraphRunner(Runner, Protocol):
    """One session of a model's graph: ONNX Runtime's (service/engine/runner.py) or
    OpenVINO's (service/engine/openvino_runner.py)."""

    input_names: tuple[str, ...]
    provider: str
    threads: int


class Batched(Protocol):
    """What the serving code needs of a model's batcher: the engine's own (service/engine/
    batcher.py) in one process, or the link to the engine process of the multi-process mode
    (service/front/engine_link.py)."""

    @property
    def alive(self) -> bool: ...

    async def submit(self, prepare: Callable[[], Sequence[tuple[int, Any]]]) -> list[Any]: ...


@dataclass
class LoadedModel:
    spec: ModelSpec
    directory: Path
    handler: KindHandler
    text: TextEncoder | None = None  # cut at the default limit (spec.token_limit)
    # Every limit a request may choose, by its length in tokens (one entry for most models).
    encoders: dict[int, TextEncoder] = field(default_factory=dict)
    runners: list[Runner] = field(default_factory=list)
    solo: bool = False  # adaptive sessions: runners[0] on all threads, the rest on one each
    resources: Any = None
    variant: str = "original"
    # what the converter measured of this graph against fp32 (store.variant_check)
    variant_check: dict[str, Any] = field(default_factory=dict)
    provider: str = "none"  # the ONNX Runtime provider of its sessions ("none": no session)
    session_threads: tuple[int, ...] = ()  # threads of each session (replicas, adaptive)
    batcher: Batched | None = None
    cache: Any = None  # its result cache in a process that serves requests (service/cache)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def exact(self) -> bool:
        """Whether the served graph gives the model's own vectors: fp32 (or a model without
        a converted graph), or a variant the converter measured at min cosine EXACT_COSINE."""
        measured = float(self.variant_check.get("min_cosine", 0.0))
        return self.variant in ("fp32", "original") or measured >= EXACT_COSINE

    @property
    def batch_invariant(self) -> bool:
        """Whether a vector is the same whatever shares its batch (cosine 0.99999 to the lone
        vector). Not OpenVINO's int8 graph: it moves a few inputs by up to 0.004 of cosine
        when a batch is padded wider (docs/benchmarks/2026-12-07-cpu-2core-int8-recall.md)."""
        return self.variant not in BATCH_DEPENDENT_VARIANTS

    @property
    def encoder(self) -> TextEncoder:
        if self.text is None:
            raise RuntimeError(f"model {self.name} has no tokenizer")
        return self.text

    def encoder_for(self, choice: TokenLimit | None) -> TextEncoder:
        """The tokenizer cutting at a request's choice of limit (None: the model's default)."""
        return self.encoders.get(self.spec.limit_of(choice)) or self.encoder

    def process(self, worker: int, payloads: Sequence[Any]) -> Sequence[Any]:
        """Run one batch on session `worker`: collate, infer, post-process (a worker thread).
        Inputs for other tasks of a task input (TaskEncoded) run apart, one run per task."""
        tasks = [getattr(item, "task", None) for item in payloads]
        if all(task is None for task in tasks):
            return self._run(worker, payloads, None)
        results: list[Any] = [None] * len(payloads)
        for task in dict.fromkeys(tasks):
            rows = [i for i, t in enumerate(tasks) if t == task]
            done = self._run(worker, [payloads[i] for i in rows], task)
            for row, result in zip(rows, done, strict=True):
                results[row] = result
        return results

    def _run(self, worker: int, payloads: Sequence[Any], task: int | None) -> Sequence[Any]:
        feeds = self.handler.collate(self, payloads)
        for name, value in self.spec.options.get("constant_inputs", {}).items():
            feeds[name] = np.asarray(value, dtype=np.int64)
        if task is not None:
            feeds[str(self.spec.options["task_input"])] = np.asarray(task, dtype=np.int64)
        outputs = self.runners[worker].run(feeds)
        for output in outputs:
            if output.dtype.kind == "f" and not np.isfinite(output).all():
                raise InferenceFailed(
                    f"model {self.name!r} produced NaN or infinite values for this batch"
                )
        return self.handler.postprocess(self, outputs, feeds, payloads)


def open_model(spec: ModelSpec, directory: Path, handler: KindHandler) -> LoadedModel:
    """A model's tokenizer and resources, without sessions: what a request-handling process
    needs to prepare requests; the engine adds the sessions (service/engine/loading.py)."""
    model = LoadedModel(spec=spec, directory=directory, handler=handler)
    if handler.needs_text:
        for length in {spec.max_length, spec.limit_of("fastembed")}:
            model.encoders[length] = load_text_encoder(directory, length, handler.special_tokens)
        model.text = model.encoders[spec.limit_of(None)]
    if handler.load_resources is not None:
        model.resources = handler.load_resources(spec, directory)
    return model
