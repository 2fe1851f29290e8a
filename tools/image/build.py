"""Build the images with buildah on the stand-in base, through the package index this
machine's pip reaches.

The Dockerfiles' published defaults are PyPI and PyTorch's CPU index; here pip's own
settings decide instead (`pip config list` and PIP_* variables: /etc/pip.conf,
/etc/xdg/pip): its index (PyPI unless set) for both, since PyTorch's index is not reached,
and its find-links directories, mounted read-only into the RUN steps at the same paths. The
PyTorch CPU wheel lies in one of those (/opt/wheels here): `torch==2.13.0` prefers its
`2.13.0+cpu` to PyPI's CUDA build, as pip on this machine does.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tools.image import buildah, standin

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "build" / "image"
PYPI = "https://pypi.org/simple"
CPU_TAG = "embedding-service:cpu"
# Dockerfile.gpu whole, on a Debian stand-in for the CUDA base: every instruction, no CUDA.
GPU_TAG = "embedding-service:gpu-without-cuda"


@dataclass
class PipSettings:
    index_url: str
    find_links: list[Path]

    def build_args(self) -> dict[str, str]:
        args = {"PIP_INDEX_URL": self.index_url, "TORCH_INDEX_URL": self.index_url}
        if self.find_links:
            args["PIP_FIND_LINKS"] = " ".join(str(path) for path in self.find_links)
        return args


def pip_config() -> dict[str, str]:
    """`pip config list` as {key: value}; the environment's entries win over files'."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    found: dict[str, str] = {}
    for line in sorted(listing.splitlines(), key=lambda line: line.startswith(":env:")):
        scoped, _, value = line.partition("=")
        found[scoped.rsplit(".", 1)[-1]] = value.strip("'\"")
    return found


def local_directory(location: str) -> Path | None:
    path = Path(urlparse(location).path if location.startswith("file:") else location)
    return path if path.is_absolute() and path.is_dir() else None


def pip_settings(config: dict[str, str] | None = None) -> PipSettings:
    config = pip_config() if config is None else config
    links = [local_directory(item) for item in config.get("find-links", "").split()]
    return PipSettings(
        index_url=config.get("index-url", PYPI), find_links=[p for p in links if p is not None]
    )


def builds(python: str, cuda: str, pip: PipSettings) -> list[buildah.Build]:
    """Both images, each base replaced by its stand-in."""
    args = {"PYTHON_IMAGE": python, **pip.build_args()}

    def build(dockerfile: str, tag: str, extra: dict[str, str]) -> buildah.Build:
        every = {**args, **extra}
        return buildah.Build(ROOT / dockerfile, tag, ROOT, every, pip.find_links)

    gpu = build("Dockerfile.gpu", GPU_TAG, {"CUDA_IMAGE": cuda})
    return [build("Dockerfile", CPU_TAG, {}), gpu]


def report_size(tag: str, base: str) -> None:
    with buildah.working_copy(tag) as tree, buildah.working_copy(base) as base_tree:
        size, base_size = buildah.tree_bytes(tree) / 1e6, buildah.tree_bytes(base_tree) / 1e6
    print(
        f"{tag}: {size:.0f} MB unpacked, of which the stand-in base {base_size:.0f} MB and "
        f"the Dockerfile's own layers {size - base_size:.0f} MB",
        flush=True,
    )


def main() -> int:
    started = time.monotonic()
    base, cuda = standin.ensure(standin.PYTHON), standin.ensure(standin.CUDA)
    print(f"  {time.monotonic() - started:.0f} s", flush=True)
    pip = pip_settings()
    print(f"pip: index {pip.index_url}, find-links {[str(p) for p in pip.find_links]}")
    LOGS.mkdir(parents=True, exist_ok=True)
    for spec in builds(base, cuda, pip):
        step = time.monotonic()
        log = LOGS / f"{spec.tag.replace(':', '-')}.log"
        print(f"building {spec.tag} from {spec.dockerfile.name} (log: {log})", flush=True)
        buildah.build(spec, log)
        print(f"  {time.monotonic() - step:.0f} s", flush=True)
    buildah.prune()
    for tag, base_tag in [(CPU_TAG, base), (GPU_TAG, cuda)]:
        report_size(tag, base_tag)
    print(f"images built in {time.monotonic() - started:.0f} s")
    return 0
