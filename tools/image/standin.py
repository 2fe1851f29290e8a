"""Stand-ins for the Dockerfiles' base images, built from Debian's own packages where no
registry's base image can be pulled: for `python:3.11-slim-bookworm` (PYTHON_IMAGE), and for
`nvidia/cuda:...-ubuntu24.04` (CUDA_IMAGE) a plain Debian without Python, as that image has
none, and without CUDA, which no package here carries.

debootstrap lays down Debian bookworm (minbase) with Python 3.11, venv, pip and the CA
certificates; the tree is then laid out as the official image is: `python` and `pip` on
PATH in /usr/local/bin, pip allowed to install (no EXTERNALLY-MANAGED marker), LANG=C.UTF-8,
documentation and man pages left out as Debian's slim images do. Two things differ, both of
this machine rather than of the image: the CA certificates this machine's TLS proxy signs
with are trusted (else pip reaches no index from inside a build), and Python is Debian's
3.11.2, not the official image's latest 3.11.

Each image is kept in buildah's storage, labelled with a digest of its recipe (this file, the
mirror, the certificates): a later build on the same machine reuses it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tools.image import buildah

RECIPE_LABEL = "embedding-service.standin-recipe"
MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class Recipe:
    tag: str
    packages: tuple[str, ...]
    python: bool  # laid out as the official Python image


PYTHON = Recipe(
    "localhost/python-standin:3.11-slim-bookworm",
    ("python3", "python3-venv", "python3-pip", "ca-certificates"),
    python=True,
)
# nvidia/cuda's images carry ca-certificates (their CUDA apt repository needs them).
CUDA = Recipe("localhost/cuda-standin:bookworm", ("ca-certificates",), python=False)
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
# What Debian's slim images leave out (their /etc/dpkg/dpkg.cfg.d/docker), kept for later
# `apt-get install`s in the image too.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
"""
ENV = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


def local_cas() -> list[Path]:
    return sorted(LOCAL_CAS.glob("*.crt")) if LOCAL_CAS.is_dir() else []


def recipe_digest(recipe: Recipe, mirror: str = MIRROR) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(f"{recipe}{mirror}".encode())
    for path in local_cas():
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def bootstrap(root: Path, recipe: Recipe, mirror: str) -> None:
    include = f"--include={','.join(recipe.packages)}"
    subprocess.run(
        ["debootstrap", "--variant=minbase", include, "bookworm", str(root), mirror],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def lay_out_python(root: Path) -> None:
    """What the official image has that Debian's packages do not."""
    for name, target in [("python", "python3"), ("pip", "pip3")]:
        (root / "usr/local/bin" / name).symlink_to(f"/usr/bin/{target}")
    for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()


def lay_out(root: Path) -> None:
    """The slim trim, emptied package caches, and this machine's certificates trusted."""
    (root / "etc/dpkg/dpkg.cfg.d/docker").write_text(DPKG_EXCLUDES)
    for pattern in ["doc/*/*", "man/*", "groff/*", "info/*", "lintian/*", "locale/*"]:
        for path in root.glob(f"usr/share/{pattern}"):
            if path.name != "copyright":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    for cache in ["var/cache/apt/archives", "var/lib/apt/lists"]:
        for path in (root / cache).glob("*"):
            if path.is_file():
                path.unlink()
    for ca in local_cas():
        shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
    # (its rehash warns about the bundle file itself: noise, kept out of the output)
    subprocess.run(["chroot", str(root), "update-ca-certificates"], check=True, capture_output=True)


def ensure(recipe: Recipe, mirror: str = MIRROR) -> str:
    """The stand-in's tag, built unless an image of the same recipe is already stored."""
    digest = recipe_digest(recipe, mirror)
    if buildah.image_label(recipe.tag, RECIPE_LABEL) == digest:
        print(f"stand-in base: {recipe.tag} (cached, recipe {digest})", flush=True)
        return recipe.tag
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="standin-") as scratch:
        root = Path(scratch) / "root"
        bootstrap(root, recipe, mirror)
        if recipe.python:
            lay_out_python(root)
        lay_out(root)
        cmd = ["python3"] if recipe.python else ["bash"]
        env = ENV if recipe.python else {"PATH": ENV["PATH"]}
        buildah.import_tree(root, recipe.tag, env=env, cmd=cmd, labels={RECIPE_LABEL: digest})
    print(f"stand-in base: {recipe.tag} (built, recipe {digest})", flush=True)
    return recipe.tag
