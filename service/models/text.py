"""Tokenization shared by every text kind: load a tokenizer the way the service needs it,
encode texts (or pre-tokenized ids) into padded-later items, and pad a batch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from service.errors import InvalidInput, ModelLoadError, PayloadTooLarge

Ids = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Encoded:
    """One tokenized input: ids and (for pairs) token type ids, unpadded."""

    ids: Ids
    type_ids: Ids | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __reduce__(self) -> tuple[type[Encoded], tuple[Ids, Ids | None]]:
        # Pickled for every input sent to the engine process (service/wire/frames.py): the
        # dataclass's own state functions cost about 9 us an item, this about 1.
        return Encoded, (self.ids, self.type_ids)


@dataclass(frozen=True)
class TextEncoder:
    tokenizer: Tokenizer
    max_length: int
    pad_id: int
    special_prefix: tuple[int, ...]
    special_suffix: tuple[int, ...]
    # A second tokenizer that truncates pairs on the document side only: tokenizers keep
    # truncation as mutable state, so one tokenizer cannot safely serve both modes from
    # several threads.
    pair_tokenizer: Tokenizer

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    @cached_property
    def untruncated(self) -> Tokenizer:
        """A copy that never truncates, for chunking long texts: made on first use, so only
        models that chunk pay its memory (two threads racing here make two; one is kept)."""
        tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
        tokenizer.no_truncation()
        return tokenizer


@dataclass(frozen=True, slots=True)
class TaskEncoded(Encoded):
    """An input for a model with a task input (jina-embeddings-v3's LoRA adapters): a batch
    holding several tasks runs once per task (LoadedModel.process)."""

    task: int = 0

    def __reduce__(self) -> tuple[type[TaskEncoded], tuple[Ids, Ids | None, int]]:  # type: ignore[override]
        return TaskEncoded, (self.ids, self.type_ids, self.task)


def load_text_encoder(directory: Path, max_length: int, special_tokens: bool = True) -> TextEncoder:
    """Load tokenizer.json, dropping any fixed padding it carries (MiniLM's pads to 128) and
    truncating at the model's max length instead of the file's; without its post-processor
    (no [CLS]/[SEP]) where the model takes none (static models)."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise ModelLoadError(f"{directory} has no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(path))
    if not special_tokens:
        tokenizer.post_processor = None
    pad_id = _pad_id(tokenizer, directory)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    prefix, suffix = _special_tokens(tokenizer)
    tokenizer.enable_truncation(max_length=max_length)
    pairs = Tokenizer.from_file(str(path))
    pairs.no_padding()
    pairs.enable_truncation(max_length=max_length, strategy="only_second")
    return TextEncoder(tokenizer, max_length, pad_id, prefix, suffix, pairs)


def _special_tokens(tokenizer: Tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The special tokens the post-processor puts before and after a text ([CLS] / [SEP])."""
    core = tokenizer.encode("a", add_special_tokens=False).ids
    full = tokenizer.encode("a").ids
    for start in range(len(full) - len(core) + 1):
        if full[start : start + len(core)] == core:
            return tuple(full[:start]), tuple(full[start + len(core) :])
    return (), ()


def _pad_id(tokenizer: Tokenizer, directory: Path) -> int:
    if tokenizer.padding is not None:
        return int(tokenizer.padding["pad_id"])
    config = directory / "config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("pad_token_id")
        if isinstance(value, int):
            return value
    for token in ("[PAD]", "<pad>", "<|endoftext|>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return int(token_id)
    return 0


# Encodings come from tokenizers' encode_batch_fast: the same ids, type ids and overflow as
# encode_batch without the character offsets, which nothing here reads. One MiniLM passage at
# a time on one thread: 69 against 86 us (docs/benchmarks/2026-11-26-cpu-2core-overheads.md).


def _checked(encoding: Encoding, index: int, truncate: bool, limit: int) -> Encoded:
    if encoding.overflowing and not truncate:
        raise PayloadTooLarge(
            f"input {index} is longer than the model's limit of {limit} tokens; "
            "shorten it or send truncate=true",
            param="input",
        )
    return Encoded(np.asarray(encoding.ids, dtype=np.int64))


def encode_texts(encoder: TextEncoder, texts: Sequence[str], *, truncate: bool) -> list[Encoded]:
    encodings = encoder.tokenizer.encode_batch_fast(list(texts))
    return [_checked(e, i, truncate, encoder.max_length) for i, e in enumerate(encodings)]


def encode_with_offsets(encoder: TextEncoder, texts: Sequence[str]) -> list[Encoding]:
    """Whole texts, untruncated and without special tokens, with each token's character
    offsets and word index: the chunking path only (encode_batch, not the fast one)."""
    return list(encoder.untruncated.encode_batch(list(texts), add_special_tokens=False))


def encode_untruncated(encoder: TextEncoder, text: str) -> Encoded:
    """One text with the model's special tokens and nothing cut: what it would cost."""
    return Encoded(np.asarray(encoder.untruncated.encode(text).ids, dtype=np.int64))


def encode_pairs(
    encoder: TextEncoder, pairs: Sequence[tuple[str, str]], *, truncate: bool
) -> list[Encoded]:
    """Encode (query, document) pairs; truncation cuts the document side only."""
    encodings = encoder.pair_tokenizer.encode_batch_fast(list(pairs))
    result = []
    for index, encoding in enumerate(encodings):
        item = _checked(encoding, index, truncate, encoder.max_length)
        result.append(Encoded(item.ids, np.asarray(encoding.type_ids, dtype=np.int64)))
    return result


def encode_token_ids(
    encoder: TextEncoder, inputs: Sequence[Sequence[int]], *, truncate: bool
) -> list[Encoded]:
    """Pre-tokenized input (OpenAI's lists of token ids): ids of this model's vocabulary,
    without special tokens; the model's special tokens are added around them."""
    room = encoder.max_length - len(encoder.special_prefix) - len(encoder.special_suffix)
    vocab = encoder.vocab_size
    result = []
    for index, ids in enumerate(inputs):
        if any(not 0 <= token < vocab for token in ids):
            raise InvalidInput(
                f"input {index} holds token ids outside the model's vocabulary (0..{vocab - 1})",
                param="input",
            )
        if len(ids) > room:
            if not truncate:
                raise PayloadTooLarge(
                    f"input {index} has {len(ids)} tokens, over the model's limit of "
                    f"{encoder.max_length} tokens (special tokens included)",
                    param="input",
                )
            ids = ids[:room]
        full = [*encoder.special_prefix, *ids, *encoder.special_suffix]
        result.append(Encoded(np.asarray(full, dtype=np.int64)))
    return result


def pad_batch(
    items: Sequence[Encoded], pad_id: int, at_least: int = 0
) -> dict[str, npt.NDArray[np.int64]]:
    """Right-pad a batch to its longest item (or to `at_least`): input_ids, attention_mask,
    token_type_ids."""
    width = max(at_least, *(len(item) for item in items))
    ids = np.full((len(items), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(items), width), dtype=np.int64)
    types = np.zeros((len(items), width), dtype=np.int64)
    for row, item in enumerate(items):
        n = len(item)
        ids[row, :n] = item.ids
        mask[row, :n] = 1
        if item.type_ids is not None:
            types[row, :n] = item.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
