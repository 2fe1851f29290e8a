"""Late interaction (ColBERT): one L2-normalised vector per token, with ColBERT's token rules.

Queries: ``[CLS] [Q] tokens [SEP]`` cut to the query length (32 by default) and padded with
the mask token up to it (query augmentation); the mask tokens are not attended to unless the
model says so (``attend_to_mask_tokens``, jina-colbert-v2). Documents: ``[CLS] [D] tokens
[SEP]`` cut to the model's max length; punctuation and padding tokens are dropped from the
output. Catalogue options: ``query_marker_id``, ``document_marker_id``, ``mask_token``,
``query_length``, ``attend_to_mask_tokens``; ``query_expansion = false`` (LateOn) cuts queries
like documents and pads none; ``skip_punctuation = false`` (mLateOn) keeps punctuation.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from service.errors import ModelLoadError, PayloadTooLarge
from service.models.catalogue import ModelSpec
from service.models.kinds.contract import Feeds, KindHandler
from service.models.kinds.dense import l2_normalize

if TYPE_CHECKING:
    from service.models.loaded import LoadedModel

Ids = npt.NDArray[np.int64]
Matrix = npt.NDArray[np.float32]
Side = Literal["query", "document"]
DEFAULT_QUERY_LENGTH = 32


@dataclass(frozen=True)
class LateRules:
    """The token rules of one late-interaction model, resolved at load time."""

    query_marker: int
    document_marker: int
    mask_id: int
    query_length: int
    attend_to_mask: bool
    skip_ids: frozenset[int]
    query_expansion: bool = True


@dataclass(frozen=True, slots=True)
class LateItem:
    """One prepared input: its ids, its own attention mask, which rows to keep as output."""

    ids: Ids
    mask: Ids
    keep: npt.NDArray[np.bool_]
    tokens: int  # real tokens (mask padding of queries not counted)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def load_rules(spec: ModelSpec, directory: Path) -> LateRules:
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise ModelLoadError(f"{directory} has no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(path))
    options = spec.options
    mask_token = str(options.get("mask_token", "[MASK]"))
    mask_id = tokenizer.token_to_id(mask_token)
    if mask_id is None:
        raise ModelLoadError(f"model {spec.name!r}: tokenizer has no mask token {mask_token!r}")
    return LateRules(
        query_marker=int(options.get("query_marker_id", 1)),
        document_marker=int(options.get("document_marker_id", 2)),
        mask_id=int(mask_id),
        query_length=int(options.get("query_length", DEFAULT_QUERY_LENGTH)),
        attend_to_mask=bool(options.get("attend_to_mask_tokens", False)),
        skip_ids=punctuation_ids(tokenizer)
        if options.get("skip_punctuation", True)
        else frozenset(),
        query_expansion=bool(options.get("query_expansion", True)),
    )


def punctuation_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """The first token id of each ASCII punctuation character, as ColBERT's skip list."""
    ids = set()
    for symbol in string.punctuation:
        encoded = tokenizer.encode(symbol, add_special_tokens=False).ids
        if encoded:
            ids.add(int(encoded[0]))
    return frozenset(ids)


def rules_of(model: LoadedModel) -> LateRules:
    rules: LateRules = model.resources
    return rules


def build_query(
    content: Sequence[int], prefix: Sequence[int], suffix: Sequence[int], rules: LateRules
) -> LateItem:
    """[CLS] [Q] content [SEP] cut to the query length, then padded with mask tokens."""
    room = max(rules.query_length - len(prefix) - len(suffix) - 1, 0)
    real = [*prefix, rules.query_marker, *content[:room], *suffix]
    padding = max(rules.query_length - len(real), 0)
    ids = np.asarray([*real, *[rules.mask_id] * padding], dtype=np.int64)
    mask = np.ones(len(ids), dtype=np.int64)
    if not rules.attend_to_mask:
        mask[len(real) :] = 0
    return LateItem(ids, mask, np.ones(len(ids), dtype=bool), len(real))


def build_document(
    content: Sequence[int],
    prefix: Sequence[int],
    suffix: Sequence[int],
    rules: LateRules,
    pad_id: int,
) -> LateItem:
    """[CLS] [D] content [SEP] (content already cut to fit); punctuation and padding are
    fed to the model but dropped from the output."""
    ids = np.asarray([*prefix, rules.document_marker, *content, *suffix], dtype=np.int64)
    skip = np.isin(ids, np.fromiter(rules.skip_ids | {pad_id}, dtype=np.int64))
    return LateItem(ids, np.ones(len(ids), dtype=np.int64), ~skip, len(ids))


def prepare(
    model: LoadedModel, texts: Sequence[str], side: Side, truncate: bool
) -> list[tuple[int, LateItem]]:
    """Tokenize texts for one side; documents over the limit are cut or refused (413)."""
    encoder, rules = model.encoder, rules_of(model)
    prefix, suffix = encoder.special_prefix, encoder.special_suffix
    room = encoder.max_length - len(prefix) - len(suffix) - 1
    encodings = encoder.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
    items = []
    for index, encoding in enumerate(encodings):
        content = encoding.ids
        if side == "query" and rules.query_expansion:
            item = build_query(content, prefix, suffix, rules)
        elif side == "query":  # no expansion: the query is cut like a document, all of it kept
            ids = np.asarray(
                [*prefix, rules.query_marker, *content[:room], *suffix], dtype=np.int64
            )
            item = LateItem(
                ids, np.ones(len(ids), dtype=np.int64), np.ones(len(ids), bool), len(ids)
            )
        else:
            if (len(content) > room or encoding.overflowing) and not truncate:
                raise PayloadTooLarge(
                    f"input {index} is longer than the model's limit of {encoder.max_length} "
                    "tokens; shorten it or send truncate=true",
                    param="inputs",
                )
            item = build_document(content[:room], prefix, suffix, rules, encoder.pad_id)
        items.append((len(item), item))
    return items


def collate(model: LoadedModel, payloads: Sequence[LateItem]) -> Feeds:
    """Right-pad to the longest item; each item keeps its own attention mask."""
    width = max(len(item) for item in payloads)
    ids = np.full((len(payloads), width), model.encoder.pad_id, dtype=np.int64)
    mask = np.zeros((len(payloads), width), dtype=np.int64)
    for row, item in enumerate(payloads):
        ids[row, : len(item)] = item.ids
        mask[row, : len(item)] = item.mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def postprocess(
    model: LoadedModel, outputs: list[npt.NDArray[Any]], feeds: Feeds, payloads: Sequence[Any]
) -> Sequence[Matrix]:
    """Per item: its kept token rows of the graph's first output, each L2-normalised."""
    states = np.asarray(outputs[0], dtype=np.float32)
    return [l2_normalize(states[row, : len(item)][item.keep]) for row, item in enumerate(payloads)]


def warmup(model: LoadedModel) -> list[tuple[int, Any]]:
    texts = ["warm up", "a somewhat longer sentence, to warm the session for longer shapes " * 4]
    return prepare(model, texts[:1], "query", True) + prepare(model, texts, "document", True)


def maxsim(query: Matrix, document: Matrix) -> float:
    """ColBERT's late-interaction score: for each query vector its best dot product with a
    document vector, summed over the query."""
    if query.shape[0] == 0 or document.shape[0] == 0:
        return 0.0
    return float((query @ document.T).max(axis=1).sum())


HANDLER = KindHandler(
    collate=collate, postprocess=postprocess, warmup=warmup, load_resources=load_rules
)
