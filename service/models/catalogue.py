"""The model catalogue: every model is one frozen row of data.

Rows live in ``models_config/*.toml`` (one ``[[model]]`` table each). Behaviour is chosen by
the fields of a row (kind, pooling, normalize, prefixes, options), never by a class per model.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from service.errors import ModelLoadError

# m3: BGE-M3, dense, sparse and late outputs of one graph (service/models/kinds/m3.py)
Kind = Literal["dense", "sparse", "late", "image", "multimodal", "rerank", "m3"]
# Which truncation limit a text is cut at: the model's own (max_length, the default), or the
# one FastEmbed 0.9.1 applies to the same name (fastembed_max_length), to match vectors a
# FastEmbed user already stored (docs/fastembed-parity.md).
TokenLimit = Literal["model", "fastembed"]
Pooling = Literal["cls", "mean", "last", "none"]
KINDS: tuple[str, ...] = get_args(Kind)
POOLINGS: tuple[str, ...] = get_args(Pooling)
VECTOR_KINDS = ("dense", "late", "image", "multimodal", "m3")  # rows that need a dim

CATALOGUE_DIR = Path(__file__).resolve().parents[2] / "models_config"


@dataclass(frozen=True)
class Source:
    """Where a model's files come from: a Hub repository, or a local directory."""

    hf: str | None = None
    local: Path | None = None
    revision: str | None = None
    model_file: str = "model.onnx"
    additional_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: Kind
    source: Source
    dim: int | None = None
    max_length: int = 512
    pooling: Pooling = "none"
    normalize: bool = True
    query_prefix: str = ""
    document_prefix: str = ""
    license: str = ""
    description: str = ""
    size_gb: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    # Other names a request may give this model by, on a route of its kind: FastEmbed's name
    # where a catalogue name differs (FastEmbed calls Jina CLIP's image tower by the text
    # tower's name, which is a dense row here).
    aliases: tuple[str, ...] = ()
    # FastEmbed's effective limit for this name where it differs from max_length: the smaller
    # of model_max_length and max_length in the tokenizer_config.json of FastEmbed's Hub
    # repository (fastembed #689). None: the same as max_length, as far as is known.
    fastembed_max_length: int | None = None
    # The limit inputs are cut at unless a request asks (EMBED_FASTEMBED_LIMITS sets it).
    token_limit: TokenLimit = "model"

    def limit_of(self, choice: TokenLimit | None) -> int:
        """The truncation limit, in tokens, of a request's choice (None: the model's default)."""
        if (choice or self.token_limit) == "fastembed" and self.fastembed_max_length:
            return self.fastembed_max_length
        return self.max_length

    def with_local_source(self, directory: Path) -> ModelSpec:
        local = replace(self.source, local=directory)
        return replace(self, source=local)


class CatalogueError(ModelLoadError):
    """A catalogue row is malformed."""


_SPEC_FIELDS = {
    "name",
    "kind",
    "dim",
    "max_length",
    "pooling",
    "normalize",
    "query_prefix",
    "document_prefix",
    "license",
    "description",
    "size_gb",
    "options",
    "aliases",
    "fastembed_max_length",
}
_SOURCE_FIELDS = {"hf", "local", "revision", "model_file", "additional_files"}


def spec_from_dict(row: Mapping[str, Any], *, origin: str = "catalogue") -> ModelSpec:
    """Build and validate one row; raise CatalogueError naming what is wrong."""
    name = row.get("name")
    if not isinstance(name, str) or not name:
        raise CatalogueError(f"{origin}: a model row has no name")
    where = f"{origin}: model {name!r}"
    unknown = set(row) - _SPEC_FIELDS - {"source"}
    if unknown:
        raise CatalogueError(f"{where}: unknown fields {sorted(unknown)}")
    kind = row.get("kind")
    if kind not in KINDS:
        raise CatalogueError(f"{where}: kind must be one of {KINDS}, got {kind!r}")
    pooling = row.get("pooling", "none")
    if pooling not in POOLINGS:
        raise CatalogueError(f"{where}: pooling must be one of {POOLINGS}, got {pooling!r}")
    if kind == "dense" and pooling == "none" and "pooled_output" not in row.get("options", {}):
        raise CatalogueError(f"{where}: a dense model needs pooling or options.pooled_output")
    source_row = dict(row.get("source", {}))
    unknown = set(source_row) - _SOURCE_FIELDS
    if unknown:
        raise CatalogueError(f"{where}: unknown source fields {sorted(unknown)}")
    if not source_row.get("hf") and not source_row.get("local"):
        raise CatalogueError(f"{where}: source needs hf or local")
    if "local" in source_row:
        source_row["local"] = Path(source_row["local"])
    source_row["additional_files"] = tuple(source_row.get("additional_files", ()))
    dim = row.get("dim")
    if kind in VECTOR_KINDS and not (isinstance(dim, int) and dim > 0):
        raise CatalogueError(f"{where}: dim must be a positive integer")
    for key in ("max_length", "fastembed_max_length"):
        value = row.get(key, 512)
        if not isinstance(value, int) or isinstance(value, bool) or value < 2:
            raise CatalogueError(f"{where}: {key} must be an integer >= 2")
    values = {k: v for k, v in row.items() if k in _SPEC_FIELDS}
    values["source"] = Source(**source_row)
    values["options"] = dict(row.get("options", {}))
    aliases = row.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise CatalogueError(f"{where}: aliases must be a list of names")
    values["aliases"] = tuple(aliases)
    return ModelSpec(**values)


def load_catalogue_file(path: Path) -> list[ModelSpec]:
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    rows = data.get("model", [])
    if not isinstance(rows, list):
        raise CatalogueError(f"{path}: [[model]] tables expected")
    return [spec_from_dict(row, origin=path.name) for row in rows]


def load_catalogue(extra_files: Iterable[Path] = ()) -> dict[str, ModelSpec]:
    """All rows of ``models_config/`` plus any extra files; later files override by name."""
    files = sorted(CATALOGUE_DIR.glob("*.toml")) + list(extra_files)
    catalogue: dict[str, ModelSpec] = {}
    for path in files:
        for spec in load_catalogue_file(path):
            catalogue[spec.name] = spec
    return catalogue


def find_row(
    catalogue: Mapping[str, ModelSpec], name: str, kinds: Iterable[str]
) -> ModelSpec | None:
    """The row a request naming `name` on a route of `kinds` means: the row of that name if it
    is of one of those kinds, else the row of those kinds that has `name` as an alias."""
    wanted = set(kinds)
    row = catalogue.get(name)
    if row is not None and row.kind in wanted:
        return row
    aliased = [s for s in catalogue.values() if s.kind in wanted and name in s.aliases]
    return aliased[0] if len(aliased) == 1 else None
