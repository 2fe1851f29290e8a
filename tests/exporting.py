"""Exporting the tests' tiny checkpoints with the project's conversion command."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from service.convert import cli

# Module marks for tests that export with torch.onnx's TorchScript exporter (dynamo=False, on
# purpose: see DESIGN.md), which warns as it traces.
EXPORT_WARNINGS = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


def convert(source: Path, out: Path, *args: str) -> dict[str, Any]:
    """`python -m service convert SOURCE OUT ARGS...` in process, quiet about torch's notices
    on its legacy TorchScript exporter; returns the service_model.json it wrote."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "Exporting aten::index", UserWarning)
        assert cli.main([str(source), str(out), *args]) == 0
    metadata: dict[str, Any] = json.loads((out / "service_model.json").read_text())
    return metadata
