"""A stand-in for `python:3.11-slim-bookworm`, the Dockerfiles' PYTHON_IMAGE, built from
Debian's own packages where no registry's base image can be pulled.

debootstrap lays down Debian bookworm (minbase) with Python 3.11, venv, pip and the CA
certificates; the tree is then laid out as the official image is: `python` and `pip` on
PATH in /usr/local/bin, pip allowed to install (no EXTERNALLY-MANAGED marker), LANG=C.UTF-8,
documentation and man pages left out as Debian's slim images do. Two things differ, both of
this machine rather than of the image: the CA certificates this machine's TLS proxy signs
with are trusted (else pip reaches no index from inside a build), and Python is Debian's
3.11.2, not the official image's latest 3.11.

The image is kept in buildah's storage, labelled with a digest of its recipe (this file, the
mirror, the certificates): a later build on the same machine reuses it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from tools.image import buildah

TAG = "localhost/python-standin:3.11-slim-bookworm"
RECIPE_LABEL = "embedding-service.standin-recipe"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ["python3", "python3-venv", "python3-pip", "ca-certificates"]
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


def recipe_digest(mirror: str = MIRROR) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(mirror.encode())
    for path in local_cas():
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def bootstrap(root: Path, mirror: str) -> None:
    include = f"--include={','.join(PACKAGES)}"
    subprocess.run(
        ["debootstrap", "--variant=minbase", include, "bookworm", str(root), mirror],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def lay_out(root: Path) -> None:
    """What the official image has that Debian's packages do not, and the slim trim."""
    for name, target in [("python", "python3"), ("pip", "pip3")]:
        (root / "usr/local/bin" / name).symlink_to(f"/usr/bin/{target}")
    for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
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
    subprocess.run(
        ["chroot", str(root), "update-ca-certificates"], check=True, stdout=subprocess.DEVNULL
    )


def ensure(mirror: str = MIRROR) -> str:
    """The stand-in's tag, built unless an image of the same recipe is already stored."""
    digest = recipe_digest(mirror)
    if buildah.image_label(TAG, RECIPE_LABEL) == digest:
        print(f"stand-in base: {TAG} (cached, recipe {digest})", flush=True)
        return TAG
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="standin-") as scratch:
        root = Path(scratch) / "root"
        bootstrap(root, mirror)
        lay_out(root)
        buildah.import_tree(root, TAG, env=ENV, cmd=["python3"], labels={RECIPE_LABEL: digest})
    print(f"stand-in base: {TAG} (built, recipe {digest})", flush=True)
    return TAG
