"""Where a model's files come from: resolving a model reference to a directory on disk.

A reference is a catalogue name (files fetched from the Hugging Face Hub into its cache),
a local directory written by ``python -m service convert`` (it holds ``service_model.json``),
or ``NAME@DIR``: a catalogue entry served from a local directory. Any of them may end in
``:VARIANT`` (``fp32``, ``optimized``, ``int8``, ``openvino-int8``, ``fp16``): the graph that
model is served with, over the ``graph_variant`` setting, so one process can serve int8 for
one model and the exact graph for another.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, get_args

from service.errors import ModelLoadError
from service.models.catalogue import ModelSpec, spec_from_dict
from service.settings import GraphVariant

METADATA_FILE = "service_model.json"
# Files a model directory may carry besides the graph; fetched when the repo has them.
OPTIONAL_FILES = (
    "tokenizer.json",
    "config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    METADATA_FILE,
)


@dataclass(frozen=True)
class HubOptions:
    cache_dir: Path | None = None
    offline: bool = False
    token: str | None = None
    endpoint: str | None = None  # None: huggingface_hub's own (HF_ENDPOINT)


def read_metadata(directory: Path) -> dict[str, Any] | None:
    path = directory / METADATA_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


VARIANTS: tuple[str, ...] = get_args(GraphVariant)  # the names graph_variant takes


def split_variant(reference: str) -> tuple[str, str | None]:
    """``NAME:int8`` -> (``NAME``, ``int8``); a reference without a known variant suffix is
    returned whole (a colon elsewhere stays part of the name or path)."""
    name, colon, variant = reference.rpartition(":")
    if colon and name and variant in VARIANTS:
        return name, variant
    return reference, None


def resolve_reference(reference: str, catalogue: dict[str, ModelSpec]) -> ModelSpec:
    """Turn one entry of the `models` setting into a spec (no file is fetched here)."""
    if "@" in reference:
        name, _, directory = reference.partition("@")
        if name not in catalogue:
            raise ModelLoadError(
                f"model {name!r} is not in the catalogue (reference {reference!r})"
            )
        return catalogue[name].with_local_source(Path(directory))
    path = Path(reference)
    if path.is_dir():
        metadata = read_metadata(path)
        if metadata is None:
            raise ModelLoadError(
                f"{path} has no {METADATA_FILE}: convert it with `python -m service convert`, "
                "or serve it as NAME@DIR with a catalogue name"
            )
        row = dict(metadata["spec"])
        row["source"] = {"local": str(path), "model_file": metadata.get("model_file", "model.onnx")}
        return spec_from_dict(row, origin=str(path / METADATA_FILE))
    if reference in catalogue:
        return catalogue[reference]
    raise ModelLoadError(
        f"unknown model {reference!r}: not a catalogue name and not a directory "
        "(see GET /models of a running service, or models_config/)"
    )


def model_directory(spec: ModelSpec, hub: HubOptions, extra_files: tuple[str, ...] = ()) -> Path:
    """Return a directory holding the spec's files, fetching them from the Hub if needed."""
    source = spec.source
    if source.local is not None:
        directory = source.local
        # A converted directory may hold only the variant it is served with (the fp16 graph
        # of a GPU image, say): with_variant checks that file.
        variants = (read_metadata(directory) or {}).get("variants")
        if not variants and not (directory / source.model_file).is_file():
            raise ModelLoadError(f"model {spec.name!r}: {directory / source.model_file} is missing")
        return directory
    assert source.hf is not None  # catalogue validation guarantees hf or local
    required = (source.model_file, *source.additional_files, *extra_files)
    paths = [_download(source.hf, name, source.revision, hub, required=True) for name in required]
    optional = [
        name
        for name in OPTIONAL_FILES
        if _download(source.hf, name, source.revision, hub, required=False) != Path()
    ]
    # hf_hub_download keeps the repo layout, so the snapshot root is the model directory.
    root = paths[0]
    for _ in Path(source.model_file).parts:
        root = root.parent
    if source.additional_files:  # external data: ONNX Runtime must find it inside the folder
        return linked_snapshot(root, [*required, *optional])
    return root


LINKS_DIR = "service-links"


def linked_snapshot(snapshot: Path, files: list[str]) -> Path:
    """The snapshot's files hard-linked (copied where links cannot cross devices) into one
    real directory beside the Hub cache: CACHE/service-links/models--ORG--NAME/COMMIT.

    A Hub snapshot holds symlinks into blobs/, so a graph's external data file resolves to a
    path outside the graph's directory, and onnxruntime 1.24 and later refuse that ("escapes
    model directory"; fastembed #603, microsoft/onnxruntime #27353; 1.32 accepts it again).
    Hard links cost no space and keep every file inside one directory."""
    repo = snapshot.parents[1]
    target = repo.parent / LINKS_DIR / repo.name / snapshot.name
    for name in files:
        real = (snapshot / name).resolve()
        link = target / name
        if link.exists() and os.path.samefile(link, real):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        partial = link.with_name(link.name + ".partial")
        partial.unlink(missing_ok=True)
        try:
            os.link(real, partial)
        except OSError:  # another device, or a file system without hard links
            shutil.copyfile(real, partial)
        os.replace(partial, link)
    return target


def _download(
    repo: str, filename: str, revision: str | None, hub: HubOptions, *, required: bool
) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    offline = hub.offline or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false")
    try:
        path = hf_hub_download(
            repo,
            filename,
            revision=revision,
            cache_dir=hub.cache_dir,
            token=hub.token,
            endpoint=hub.endpoint,
            local_files_only=offline,
        )
    except EntryNotFoundError as exc:  # the repo exists, the file does not
        if not required:
            return Path()
        raise ModelLoadError(f"{repo}: file {filename!r} not found on the Hub") from exc
    except LocalEntryNotFoundError as exc:  # offline, or the Hub could not be reached
        if not required:
            return Path()
        where = "in the local cache (offline mode)" if offline else "and the Hub is unreachable"
        raise ModelLoadError(f"{repo}: file {filename!r} is not cached {where}") from exc
    except Exception as exc:  # HTTP errors: 401/403/404 repo, 5xx
        if not required and "404" in str(exc):
            return Path()
        raise ModelLoadError(f"{repo}: could not fetch {filename!r}: {exc}") from exc
    return Path(path)


EXACT_COSINE = 0.9999  # min cosine against fp32 for a graph served by default


def exact_default(metadata: dict[str, Any], on_gpu: bool) -> str:
    """The recorded default graph for the provider, if it gives the model's own vectors
    (min cosine against fp32 at least EXACT_COSINE on the converter's check); else fp32. A
    directory converted before defaults were exact may record dynamic int8 as its CPU
    default: it is served fp32 unless int8 is asked for."""
    default = str(metadata.get("default_gpu" if on_gpu else "default_cpu", "fp32"))
    check = metadata.get("checks", {}).get(default)
    if default == "fp32" or (check is not None and check["min_cosine"] >= EXACT_COSINE):
        return default
    return "fp32"


def variant_check(directory: Path, variant: str) -> dict[str, Any]:
    """What the converter measured of a graph variant against fp32 (empty for fp32 itself
    or a directory without the record)."""
    checks = (read_metadata(directory) or {}).get("checks", {})
    found = checks.get(variant, {})
    return {k: found[k] for k in ("min_cosine", "mean_cosine", "texts", "method") if k in found}


def with_variant(
    spec: ModelSpec, directory: Path, variant: str, on_gpu: bool
) -> tuple[ModelSpec, str]:
    """Pick the graph file of a converted directory: the asked variant, or its recorded default."""
    metadata = read_metadata(directory)
    if metadata is None or "variants" not in metadata:
        return spec, "original"
    variants: dict[str, str] = metadata["variants"]
    if variant == "auto":
        variant = exact_default(metadata, on_gpu)
    if variant not in variants:
        raise ModelLoadError(
            f"model {spec.name!r}: graph variant {variant!r} not in {directory} "
            f"(has {sorted(variants)}); convert with the option that writes it"
        )
    if not (directory / variants[variant]).is_file():
        raise ModelLoadError(
            f"model {spec.name!r}: graph variant {variant!r} is recorded but "
            f"{directory / variants[variant]} is missing"
        )
    source = replace(spec.source, model_file=variants[variant])
    return replace(spec, source=source), variant
