"""How many request-handling processes to run (the ``workers`` setting, 0: by the machine)."""

from __future__ import annotations

from service.engine.scaling import available_cores
from service.settings import Settings

CUDA = "CUDAExecutionProvider"
GPU_CORES_PER_WORKER = 2
GPU_MAX_WORKERS = 8


def worker_count(settings: Settings, cores: int | None = None, on_gpu: bool | None = None) -> int:
    """The setting, or (0) 1 on CPU, where inference needs every core; on a GPU, one per
    GPU_CORES_PER_WORKER cores, 2 to GPU_MAX_WORKERS (docs/scaling.md)."""
    if settings.workers > 0:
        return settings.workers
    if on_gpu is None:
        on_gpu = _gpu_provider(settings)
    if not on_gpu:
        return 1
    cores = cores or available_cores()
    return max(2, min(GPU_MAX_WORKERS, cores // GPU_CORES_PER_WORKER))


def _gpu_provider(settings: Settings) -> bool:
    """Whether the engine will run on CUDA (asked, or auto with onnxruntime-gpu present),
    without loading CUDA here."""
    if settings.execution_provider == "cpu":
        return False
    import onnxruntime as ort

    return CUDA in ort.get_available_providers()
