"""What a bench prints, kept to be written to bench-results/ as well."""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
lines: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    lines.append(text)


def save(prefix: str) -> Path:
    """Everything said so far, to bench-results/PREFIX-<date>-<time>.md."""
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    path = out / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {path}")
    return path
