"""The container images, built and started for real: `make image-test` builds them with
buildah on a stand-in for the Python base image (`python -m tools.image`), then runs these
against what it built. The CPU image is started as compose and the Kubernetes Deployment run
it (tools/image/rootfs.py): its ENV, USER, WORKDIR and CMD from the image's configuration,
the compose file's environment, a read-only root, a tmpfs /tmp and its /cache volume."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import yaml

from bench.served import wait_until_ready
from tests.conftest import ROOT, free_port
from tests.deploy_render import render
from tools.image import buildah
from tools.image.build import CPU_TAG, GPU_TAG
from tools.image.rootfs import ImageConfig, Tree, started_tree

pytestmark = pytest.mark.image
NAME = "sentence-transformers/all-MiniLM-L6-v2"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
MODEL_DIR = "models/all-MiniLM-L6-v2"


def reference(text: str) -> np.ndarray:
    rows = json.loads((ROOT / "tests" / "data" / "minilm_reference.json").read_text())["rows"]
    row = next(r for r in rows if r["text"] == text)
    return np.frombuffer(base64.b64decode(row["vector"]), dtype="<f4")


def built(tag: str) -> str:
    if not buildah.exists(tag):
        raise AssertionError(f"no image {tag}: `make image-test` builds it first")
    return tag


def compose_environment() -> dict[str, str]:
    """The embedder's environment in docker-compose.yml, `${VAR:-default}` read as compose
    does with VAR unset."""
    environment = COMPOSE["x-embedder"]["environment"]
    unset = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")
    return {key: unset.sub(r"\1", str(value)) for key, value in environment.items()}


@dataclass
class Served:
    tree: Tree
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthcheck(self, port: int | None = None) -> int:
        """The image's own HEALTHCHECK command, run in the image as Docker runs it."""
        env = {"EMBED_PORT": str(port or self.port)}
        return self.tree.run(self.tree.config.healthcheck, env, timeout=30)

    def stop(self) -> int:
        """The image's STOPSIGNAL, as `docker stop` sends it; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.Signals[self.tree.config.stop_signal])
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


# What each image is started with beyond compose's environment: the GPU image on the CPU
# provider, since no GPU is here (its own EMBED_EXECUTION_PROVIDER=cuda fails fast instead).
IMAGES = {CPU_TAG: {}, GPU_TAG: {"EMBED_EXECUTION_PROVIDER": "cpu"}}


@contextmanager
def started(tag: str, scratch: Path, env: dict[str, str]) -> Iterator[Served]:
    """The image's CMD started with compose's environment and `env`; EMBED_PORT a free port,
    since the host's network is shared (compose would map the port instead)."""
    with started_tree(tag, scratch / "volumes") as tree:
        port = free_port()
        log = scratch / "service.log"
        with log.open("wb") as out:
            env = {**compose_environment(), **env, "EMBED_PORT": str(port)}
            served = Served(tree, tree.popen(tree.config.cmd, env, out), port, log)
        try:
            yield served
        finally:
            served.stop()


@contextmanager
def serve(tag: str, scratch: Path) -> Iterator[Served]:
    """The image started, ready."""
    with started(tag, scratch, IMAGES[tag]) as served:
        failure = wait_until_ready(served.url, served.process, timeout=180, poll_s=0.1)
        assert failure is None, f"{failure}: {served.log.read_text(errors='replace')[-3000:]}"
        yield served


@pytest.fixture(scope="module", params=list(IMAGES), ids=["cpu", "gpu-without-cuda"])
def image(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    scratch = tmp_path_factory.mktemp(request.param.replace(":", "-"))
    with serve(built(request.param), scratch) as served:
        yield served


def test_the_image_turns_ready_and_its_healthcheck_passes(image: Served) -> None:
    assert httpx.get(f"{image.url}/ready", timeout=10).status_code == 200
    assert "/health" in " ".join(image.tree.config.healthcheck)
    assert image.healthcheck() == 0, image.log.read_text()[-2000:]
    assert image.healthcheck(port=free_port()) != 0  # and it does fail when nothing answers


def test_the_image_gives_the_reference_vector(image: Served) -> None:
    """fp32 graph (the image converts without variants): PyTorch's vector, not near it."""
    response = httpx.post(
        f"{image.url}/v1/embeddings", json={"model": NAME, "input": "hello world"}, timeout=30
    )
    assert response.status_code == 200, response.text
    vector = np.array(response.json()["data"][0]["embedding"])
    theirs = reference("hello world")
    cosine = float(vector @ theirs / np.linalg.norm(vector) / np.linalg.norm(theirs))
    served = httpx.get(f"{image.url}/models", timeout=10).json()["models"]
    assert [(m["name"], m["variant"]) for m in served] == [(NAME, "fp32")]
    assert cosine >= 0.9999, cosine


def test_the_service_runs_as_the_images_user_in_the_image(image: Served) -> None:
    uid, _, gid = image.tree.config.user.partition(":")
    assert uid not in ("", "0", "root")
    processes = [psutil.Process(image.process.pid)]
    processes += processes[0].children(recursive=True)  # request-handling workers, if any
    for process in processes:
        assert set(process.uids()) == {image.tree.uid} == {int(uid)}, process
        assert set(process.gids()) == {image.tree.gid} == {int(gid)}, process
        assert Path(f"/proc/{process.pid}/root").readlink() == image.tree.root
    assert Path(processes[0].cwd()) == image.tree.root / image.tree.config.workdir.lstrip("/")


def test_the_image_runs_on_a_read_only_root_with_its_volume(image: Served) -> None:
    """As compose (read_only) and Kubernetes (readOnlyRootFilesystem) run it."""
    write = "import sys; open(sys.argv[1], 'w').write('x')"
    assert image.tree.run(["python", "-c", write, "/app/x"], {}, timeout=30) != 0
    for writable in ["/tmp/x", *(f"{volume}/x" for volume in image.tree.config.volumes)]:
        assert image.tree.run(["python", "-c", write, writable], {}, timeout=30) == 0, writable


def test_the_final_stage_holds_no_pytorch(image: Served) -> None:
    root = image.tree.root
    venv = root / "opt" / "venv"
    packages = {p.name.lower() for p in venv.glob("lib/python3*/site-packages/*")}
    assert {"onnxruntime", "tokenizers", "fastapi"} <= packages
    assert not {"torch", "transformers", "onnx", "sympy"} & packages
    libraries = [p for p in (root / "opt").rglob("libtorch*")]
    libraries += [p for p in (root / "usr").rglob("libtorch*")]
    assert libraries == []


def test_the_image_stops_on_its_stop_signal(tmp_path: Path) -> None:
    """SIGTERM drains and exits 0 (compose's stop_grace_period, the pod's grace period)."""
    with serve(built(CPU_TAG), tmp_path) as served:
        assert served.stop() == 0, served.log.read_text()[-2000:]


def test_the_gpu_image_without_a_gpu_stays_unready_saying_why(tmp_path: Path) -> None:
    """Its own EMBED_EXECUTION_PROVIDER=cuda, no GPU (nor CUDA) here: the model does not load,
    /ready answers 503 with the reason, and the process stays up (/health, liveness)."""
    with started(built(GPU_TAG), tmp_path, {}) as served:
        deadline = time.monotonic() + 120
        reason = ""
        while not reason and time.monotonic() < deadline and served.process.poll() is None:
            time.sleep(0.2)
            with contextlib.suppress(httpx.TransportError):
                reason = httpx.get(f"{served.url}/ready", timeout=2).json().get("reason", "")
        assert "CUDAExecutionProvider" in reason, served.log.read_text()[-2000:]
        assert httpx.get(f"{served.url}/ready", timeout=2).status_code == 503
        assert served.healthcheck() == 0


def pod_spec(layout: str) -> dict[str, Any]:
    docs = render(ROOT / "deploy" / "kubernetes" / layout)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_compose_and_kubernetes_run_the_image_built_here() -> None:
    """The image and the settings these tests built and ran are the ones deployed."""
    config = ImageConfig.of(built(CPU_TAG))
    uid, gid = (int(part) for part in config.user.split(":"))
    service = COMPOSE["services"]["embeddings-cpu"]
    assert service["image"] == CPU_TAG
    assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
    assert {volume.split(":")[1] for volume in service["volumes"]} == set(config.volumes)
    assert [f"{port.rsplit(':', 1)[1]}/tcp" for port in service["ports"]] == config.exposed_ports
    pod = pod_spec("base")
    main = pod["containers"][0]
    assert main["image"] == CPU_TAG
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
    assert [f"{port['containerPort']}/tcp" for port in main["ports"]] == config.exposed_ports
    assert config.env["EMBED_PORT"] == str(main["ports"][0]["containerPort"])
    assert set(config.volumes) <= {mount["mountPath"] for mount in main["volumeMounts"]}
    env = {item["name"]: item.get("value") for item in main["env"]}
    assert env["EMBED_MODELS"] == config.env["EMBED_MODELS"]
    gpu = pod_spec("overlays/gpu")["containers"][0]
    assert gpu["image"] == COMPOSE["services"]["embeddings-gpu"]["image"] == "embedding-service:gpu"


def model_files(tag: str) -> dict[str, str]:
    with buildah.working_copy(tag) as tree:
        model = tree / MODEL_DIR
        return {
            path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(model.iterdir())
            if path.is_file()
        }


def test_both_images_hold_the_same_model() -> None:
    """Converted by the same instructions on the same base: the same files, byte for byte."""
    cpu, gpu = model_files(built(CPU_TAG)), model_files(built(GPU_TAG))
    assert {"model.onnx", "service_model.json", "tokenizer.json"} <= set(cpu)
    assert gpu == cpu
