"""The lock files (requirements/, `make lock`) are what gets installed, and agree with what
pyproject.toml asks for: `make install` put exactly dev.lock's versions in this environment,
and the images' locks are the same versions."""

from __future__ import annotations

import re
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "requirements"
PROJECT = "embedding-service"
# Installed by `python -m venv` itself, not by the lock.
SEEDED = {"pip"}


def pins(lock: str) -> dict[str, Version]:
    """{name: version} of a lock file; every pin carries at least one sha256."""
    text = (LOCKS / lock).read_text()
    found = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = block.split()[0] if block[:1].isalnum() else None
        if head is None:
            continue
        assert "--hash=sha256:" in block, f"{lock}: {head} has no hash"
        name, _, version = head.partition("==")
        found[canonicalize_name(name)] = Version(version)
    return found


def test_this_environment_holds_exactly_the_dev_lock() -> None:
    locked = pins("dev.lock")
    # the environment's own site-packages: setuptools puts its vendored packages' metadata on
    # sys.path once something imports it, and those are not installed packages
    places = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {
        canonicalize_name(d.metadata["Name"]): Version(d.version)
        for d in metadata.distributions(path=places)
    }
    installed.pop(canonicalize_name(PROJECT))
    for name in SEEDED:
        installed.pop(name, None)
    assert installed == locked, {
        "not locked": sorted(set(installed) - set(locked)),
        "missing": sorted(set(locked) - set(installed)),
        "other version": sorted(
            n for n in set(locked) & set(installed) if locked[n] != installed[n]
        ),
    }


def test_the_locks_satisfy_pyproject_and_the_nodeps_list() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {
        "service.lock": project["dependencies"],
        "convert.lock": project["dependencies"] + project["optional-dependencies"]["convert"],
        "dev.lock": [
            *project["dependencies"],
            *(d for extra in project["optional-dependencies"].values() for d in extra),
            *(
                line
                for line in (LOCKS / "nodeps.in").read_text().splitlines()
                if line and not line.startswith("#")
            ),
        ],
    }
    for lock, requirements in wanted.items():
        locked = pins(lock)
        for line in requirements:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            name = canonicalize_name(requirement.name)
            assert name in locked, f"{lock} lacks {line}: run `make lock`"
            assert requirement.specifier.contains(locked[name], prereleases=True), (
                f"{lock} pins {name} {locked[name]}, pyproject asks {line}: run `make lock`"
            )


def test_the_images_run_the_versions_the_tests_ran() -> None:
    dev = pins("dev.lock")
    for lock in ("service.lock", "convert.lock", "weights.lock", "gpu.lock"):
        for name, version in pins(lock).items():
            if name == "onnxruntime-gpu":
                continue  # the GPU image's runtime, in place of onnxruntime
            assert dev[name] == version, f"{lock} pins {name} {version}, dev.lock {dev[name]}"
    assert "onnxruntime-gpu" in pins("gpu.lock") and "onnxruntime" not in pins("gpu.lock")
    for dockerfile, runtime in (("Dockerfile", "service.lock"), ("Dockerfile.gpu", "gpu.lock")):
        text = (ROOT / dockerfile).read_text()
        for lock in (runtime, "convert.lock", "weights.lock"):
            assert f"--require-hashes -r {lock}" in text or f"-r {lock}" in text, (dockerfile, lock)
        assert "--require-hashes" in text and "tomllib" not in text
