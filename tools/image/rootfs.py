"""Start a built image without a container runtime: its root file system in a chroot, as
its USER, in its WORKDIR, with its ENV, running its CMD, all read from the image's own
configuration.

The tree is mounted as compose (`read_only: true`, a tmpfs at /tmp) and the Kubernetes
Deployment (readOnlyRootFilesystem, emptyDirs at /tmp and /cache) run it: the image's files
read-only, /tmp a tmpfs, each VOLUME a writable directory owned by the image's user (as a
new named volume copies the image's ownership), /proc, a read-only /sys, and a /dev of the
usual device nodes with a tmpfs /dev/shm. The network is the host's: the service is reached
on loopback, which is why a caller sets EMBED_PORT to a free port.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tools.image import buildah

DEVICES = ["null", "zero", "full", "random", "urandom", "tty"]


@dataclass(frozen=True)
class ImageConfig:
    env: dict[str, str]
    user: str
    workdir: str
    cmd: list[str]
    healthcheck: list[str]
    exposed_ports: list[str]
    volumes: list[str]
    stop_signal: str

    @classmethod
    def of(cls, tag: str) -> ImageConfig:
        """The image's Docker configuration (where HEALTHCHECK lives)."""
        config: dict[str, Any] = buildah.inspect(tag)["Docker"]["config"]
        test = (config.get("Healthcheck") or {}).get("Test") or []
        return cls(
            env=dict(item.split("=", 1) for item in config.get("Env") or []),
            user=config.get("User") or "",
            workdir=config.get("WorkingDir") or "/",
            cmd=list(config.get("Cmd") or []),
            healthcheck=list(test[1:]) if test[:1] == ["CMD"] else list(test),
            exposed_ports=sorted(config.get("ExposedPorts") or {}),
            volumes=sorted(config.get("Volumes") or {}),
            stop_signal=config.get("StopSignal") or "SIGTERM",
        )


def ids(root: Path, user: str) -> tuple[int, int]:
    """USER as (uid, gid): numbers, or names looked up in the image's own /etc/passwd."""
    name, _, group = user.partition(":")
    passwd = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines()]
    groups = [line.split(":") for line in (root / "etc/group").read_text().splitlines()]
    entry = next((row for row in passwd if name in (row[0], row[2])), None)
    uid = int(name) if name.isdigit() else int(entry[2]) if entry else 0
    if not group:
        return uid, int(entry[3]) if entry else 0
    found = next((row for row in groups if group in (row[0], row[2])), None)
    return uid, int(group) if group.isdigit() else int(found[2]) if found else 0


@dataclass(frozen=True)
class Tree:
    """A started image's root file system and what a process in it runs as."""

    root: Path
    config: ImageConfig
    uid: int
    gid: int

    def entered(self) -> Callable[[], None]:
        """For Popen's preexec_fn: into the chroot and the WORKDIR, then drop to the USER."""

        def enter() -> None:
            os.chroot(self.root)
            os.chdir(self.config.workdir)
            os.setgroups([])
            os.setgid(self.gid)
            os.setuid(self.uid)

        return enter

    def environment(self, overrides: dict[str, str]) -> dict[str, str]:
        return {**self.config.env, **overrides}

    def popen(
        self, argv: Sequence[str], env: dict[str, str], log: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        """argv[0] is looked up on the image's PATH inside the chroot, as a runtime does."""
        return subprocess.Popen(
            list(argv),
            env=self.environment(env),
            preexec_fn=self.entered(),  # before any thread: the test process forks it
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def run(self, argv: Sequence[str], env: dict[str, str], timeout: float) -> int:
        with tempfile.TemporaryFile() as log:
            process = self.popen(argv, env, log)
            try:
                return process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                return -9


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def umount(target: Path) -> None:
    """Unmount; lazily when still busy, so that nothing stays mounted after a failure."""
    if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "--lazy", str(target)], capture_output=True)


def mounted(stack: ExitStack, args: list[str], target: Path) -> None:
    mount(*args, str(target))
    stack.callback(umount, target)


def lay_out_mounts(stack: ExitStack, image: Path, root: Path) -> None:
    mounted(stack, ["--bind", str(image)], root)
    mounted(stack, ["-o", "remount,bind,ro"], root)
    mounted(stack, ["-t", "proc", "proc"], root / "proc")
    mounted(stack, ["-t", "sysfs", "-o", "ro", "sysfs"], root / "sys")
    mounted(stack, ["-t", "tmpfs", "-o", "mode=755,size=16m", "tmpfs"], root / "dev")
    for name in DEVICES:
        (root / "dev" / name).touch()
        mounted(stack, ["--bind", f"/dev/{name}"], root / "dev" / name)
    (root / "dev/shm").mkdir()
    mounted(stack, ["-t", "tmpfs", "-o", "mode=1777,size=64m", "tmpfs"], root / "dev/shm")
    mounted(stack, ["-t", "tmpfs", "-o", "mode=1777,size=256m", "tmpfs"], root / "tmp")


@contextmanager
def started_tree(tag: str, volumes: Path) -> Iterator[Tree]:
    """The image's tree mounted for running; each VOLUME a directory under `volumes`."""
    config = ImageConfig.of(tag)
    with ExitStack() as stack:
        image = stack.enter_context(buildah.working_copy(tag))
        uid, gid = ids(image, config.user)
        root = Path(tempfile.mkdtemp(prefix="image-root-"))
        stack.callback(os.rmdir, root)  # only ever an empty mount point: never a tree removal
        lay_out_mounts(stack, image, root)
        for volume in config.volumes:
            source = volumes / volume.strip("/").replace("/", "-")
            source.mkdir(parents=True, exist_ok=True)
            os.chown(source, *os.stat(image / volume.lstrip("/"))[4:6])
            mounted(stack, ["--bind", str(source)], root / volume.lstrip("/"))
        yield Tree(root=root, config=config, uid=uid, gid=gid)
