"""buildah, the few commands the image checks use: build a Containerfile, import a root file
system as an image, read an image's configuration, and mount a working copy of it."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# RUN steps in a chroot: no container runtime can start here (podman's setrlimit is refused).
ISOLATION = "chroot"


def buildah(*args: str) -> str:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} failed: {result.stderr[-3000:]}")
    return result.stdout.strip()


def exists(tag: str) -> bool:
    command = ["buildah", "inspect", "--type", "image", tag]
    return subprocess.run(command, capture_output=True).returncode == 0


def inspect(tag: str) -> dict[str, Any]:
    return json.loads(buildah("inspect", "--type", "image", tag))  # type: ignore[no-any-return]


def image_label(tag: str, label: str) -> str | None:
    if not exists(tag):
        return None
    labels = inspect(tag)["OCIv1"]["config"].get("Labels") or {}
    return labels.get(label)


def import_tree(
    root: Path, tag: str, *, env: dict[str, str], cmd: list[str], labels: dict[str, str]
) -> None:
    """A directory tree as a one-layer image (what `docker import` does)."""
    container = buildah("from", "scratch")
    try:
        mount = Path(buildah("mount", container))
        subprocess.run(["cp", "-a", f"{root}/.", str(mount)], check=True)
        buildah("umount", container)
        options = [f"--env={key}={value}" for key, value in env.items()]
        options += [f"--label={key}={value}" for key, value in labels.items()]
        buildah("config", *options, f"--cmd={json.dumps(cmd)}", container)
        buildah("commit", "--quiet", "--rm", "--format", "docker", container, tag)
    except BaseException:
        subprocess.run(["buildah", "rm", container], capture_output=True)
        raise


@dataclass
class Build:
    dockerfile: Path
    tag: str
    context: Path
    args: dict[str, str] = field(default_factory=dict)
    volumes: list[Path] = field(default_factory=list)

    def stages(self) -> list[str]:
        """The Dockerfile's named build stages (`FROM ... AS name`), in order."""
        text = self.dockerfile.read_text()
        return re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.MULTILINE | re.IGNORECASE)

    def stage_tag(self, stage: str) -> str:
        return f"{self.tag}-stage-{stage}"

    def command(self, target: str | None = None) -> list[str]:
        """`buildah bud` as `docker build` would run it: Docker's image format (OCI's has no
        HEALTHCHECK), each step cached as a layer for the next build on this machine."""
        tag = self.stage_tag(target) if target else self.tag
        command = ["buildah", "bud", f"--isolation={ISOLATION}", "--format=docker", "--layers"]
        command += ["--pull=never", f"--file={self.dockerfile}", f"--tag={tag}"]
        command += [f"--build-arg={key}={value}" for key, value in self.args.items()]
        command += [f"--volume={path}:{path}:ro" for path in self.volumes]
        if target:
            command.append(f"--target={target}")
        return [*command, str(self.context)]


def build(spec: Build, log: Path) -> None:
    """Each named stage first, tagged, then the image: a tag keeps each stage's cached
    layers from `prune` (only the last stage's are the image's own)."""
    with log.open("w") as out:
        for target in [*spec.stages(), None]:
            result = subprocess.run(spec.command(target), stdout=out, stderr=subprocess.STDOUT)
            if result.returncode != 0:
                tail = log.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"building {spec.tag} from {spec.dockerfile} failed:\n{tail}")


def prune() -> None:
    """Remove the images no tag leads to any more (earlier builds' layers): each build keeps
    its own cached steps for the next, and the storage does not grow run after run."""
    buildah("rmi", "--prune")


def tree_bytes(root: Path) -> int:
    """Bytes in a mounted image's files (what `docker images` shows, near enough)."""
    result = subprocess.run(["du", "-sbx", str(root)], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[0])


@contextmanager
def working_copy(tag: str) -> Iterator[Path]:
    """A throw-away container of the image, its file system mounted; removed on exit."""
    container = buildah("from", "--pull=never", "--quiet", tag)
    try:
        yield Path(buildah("mount", container))
    finally:
        subprocess.run(["buildah", "umount", container], capture_output=True)
        subprocess.run(["buildah", "rm", container], capture_output=True)
