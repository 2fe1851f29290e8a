"""Tiny randomly initialised checkpoints of the real architectures, exported to ONNX the way
FastEmbed's Hub repositories hold them (the graph gives token states, MLM logits, normalised
ColBERT vectors or a classifier logit; FastEmbed pools and normalises outside it), and laid out
as FastEmbed loads a local model: the graph under the model_file FastEmbed's description names,
with tokenizer.json, tokenizer_config.json, special_tokens_map.json and config.json beside it.
The same directory is served by the service as NAME@DIR, so both read the same files."""

from __future__ import annotations

import json
import shutil
import string
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from tests import late_models
from tests.late_models import BERT_SPECIALS, HIDDEN, WORDS, XLMR_SPECIALS
from tests.tiny_models import bert_template

# The limit tokenizer_config.json states: FastEmbed truncates there (model_max_length).
FASTEMBED_LIMIT = 40


def bert_vocab() -> dict[str, int]:
    # Every ASCII punctuation character is a token: ColBERT's skip list is their ids.
    tokens = [*BERT_SPECIALS, *string.punctuation, *WORDS]
    return {token: i for i, token in enumerate(tokens)}


def xlmr_vocab() -> dict[str, int]:
    tokens = [*XLMR_SPECIALS, *string.punctuation, *WORDS, "<mask>"]
    return {token: i for i, token in enumerate(tokens)}


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def save_bert_tokenizer(
    directory: Path,
    limit: int = FASTEMBED_LIMIT,
    mask: str = "[MASK]",
    vocab: dict[str, int] | None = None,
) -> None:
    """BERT's WordPiece tokenizer files, with the fixed padding real tokenizer.json files carry
    (and another mask token as an added special token, where a model names one)."""
    vocab = vocab or bert_vocab()
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = bert_template(vocab)
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.enable_padding(length=limit, pad_id=0, pad_token="[PAD]")
    # As real tokenizer.json files list them: added tokens marked special.
    tokenizer.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", mask])
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    names = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
    specials = dict(zip(names, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", mask], strict=True))
    write_json(directory / "special_tokens_map.json", specials)
    write_json(directory / "tokenizer_config.json", {"model_max_length": limit, **specials})


def save_xlmr_tokenizer(directory: Path, limit: int = FASTEMBED_LIMIT) -> None:
    """XLM-R's specials and pair template (<s> A </s></s> B </s>), pad id 1, with the files
    FastEmbed reads beside tokenizer.json."""
    late_models.save_xlmr_tokenizer(directory, xlmr_vocab())
    names = ("bos_token", "pad_token", "eos_token", "unk_token", "mask_token")
    specials = dict(zip(names, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], strict=True))
    write_json(directory / "special_tokens_map.json", specials)
    write_json(directory / "tokenizer_config.json", {"model_max_length": limit, **specials})


# LateOn's and mLateOn's [Q] and [D] marker ids: their vocabularies are that large.
LATEON_MARKERS = {"lateon": (50368, 50369), "mlateon": (256000, 256001)}


def config(kind: str, vocab_size: int | None = None) -> Any:
    import transformers

    common = {
        "hidden_size": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_labels": 1,
    }
    if kind == "xlmr":
        return transformers.XLMRobertaConfig(
            **common,
            vocab_size=vocab_size or len(xlmr_vocab()),
            max_position_embeddings=514,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            type_vocab_size=1,
        )
    return transformers.BertConfig(
        **common,
        vocab_size=vocab_size or len(bert_vocab()),
        max_position_embeddings=512,
        pad_token_id=0,
    )


def export(
    forward: Callable[..., Any],
    parts: list[Any],
    path: Path,
    inputs: tuple[str, ...],
    outputs: dict[str, int],
    sample: tuple[Any, ...] = (),
) -> None:
    """Export `forward(**inputs)`, which uses the torch modules `parts`, with dynamic batch and
    sequence axes (TorchScript exporter: DESIGN.md); `outputs` names each output and its rank."""
    import torch

    class Keywords(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.parts = torch.nn.ModuleList(parts)

        def forward(self, *args: torch.Tensor) -> Any:
            return forward(**dict(zip(inputs, args, strict=True)))

    sample = sample or tuple(torch.ones(2, 5, dtype=torch.long) for _ in inputs)
    torch.nn.ModuleList(parts).eval()
    shapes = {0: {}, 2: {0: "batch", 1: "sequence"}, 4: {0: "batch"}}
    axes: dict[str, dict[int, str]] = {
        name: shapes[tensor.dim()] for name, tensor in zip(inputs, sample, strict=True)
    }
    for name, rank in outputs.items():
        axes[name] = {0: "batch", 1: "sequence"} if rank == 3 else {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Keywords(),
            sample,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
XLMR_INPUTS = ("input_ids", "attention_mask")  # XLM-R and ColBERT graphs


def build(root: Path, family: str) -> Path:
    """One family's graph and tokenizer files in root/family (graph as model.onnx)."""
    import torch
    import transformers

    torch.manual_seed(sum(map(ord, family)))
    directory = root / family
    xlmr = family.endswith("xlmr") or family == "jina-colbert"
    lateon = family in LATEON_MARKERS
    if xlmr:
        save_xlmr_tokenizer(directory)
    else:
        save_bert_tokenizer(directory, mask="<mask>" if family == "mlateon" else "[MASK]")
    vocab_size = LATEON_MARKERS[family][1] + 1 if lateon else None
    if family == "jina-colbert":  # its [Q] and [D] markers are ids 250002 and 250003
        vocab_size = 250004
    cfg = config("xlmr" if xlmr else "bert", vocab_size)
    cfg.save_pretrained(str(directory))
    # ColBERT graphs take no token types: FastEmbed inserts its marker into the ids and the
    # mask only, so a token_type_ids input would be one shorter.
    inputs = XLMR_INPUTS if xlmr or family == "colbert" or lateon else BERT_INPUTS
    graph = directory / "model.onnx"
    if family == "dense":  # token states; FastEmbed pools (CLS, mean, last token)
        bert = transformers.BertModel(cfg, add_pooling_layer=False).eval()
        export(
            lambda **kw: bert(**kw).last_hidden_state,
            [bert],
            graph,
            inputs,
            {"last_hidden_state": 3},
        )
    elif family == "dense-pooled":  # a graph that pools itself: output 1 (EmbeddingGemma's)
        bert = transformers.BertModel(cfg, add_pooling_layer=False).eval()
        scale = torch.linspace(0.5, 1.5, HIDDEN)

        def pooled(**kw: Any) -> Any:
            states = bert(**kw).last_hidden_state
            mask = kw["attention_mask"].unsqueeze(-1).to(states.dtype)
            return states, (states * mask).sum(1) / mask.sum(1) * scale

        export(pooled, [bert], graph, inputs, {"last_hidden_state": 3, "sentence_embedding": 2})
    elif family == "dense-task":  # jina v3: a task_id input picks an adapter (a bias here)
        bert = transformers.BertModel(cfg, add_pooling_layer=False).eval()
        tasks = torch.nn.Embedding(5, HIDDEN)

        def adapted(**kw: Any) -> Any:
            task = kw.pop("task_id")
            return bert(**kw).last_hidden_state + tasks(task)

        ones = torch.ones(2, 5, dtype=torch.long)
        task_inputs = ("input_ids", "attention_mask", "task_id")
        states = {"last_hidden_state": 3}
        export(adapted, [bert, tasks], graph, task_inputs, states, (ones, ones, torch.tensor(1)))
    elif family == "splade":  # MLM logits over the vocabulary
        mlm = transformers.BertForMaskedLM(cfg).eval()
        export(lambda **kw: mlm(**kw).logits, [mlm], graph, inputs, {"logits": 3})
    elif family == "colbert":  # BERT + bias-free projection, unit token vectors in the graph
        bert = transformers.BertModel(cfg, add_pooling_layer=False).eval()
        linear = torch.nn.Linear(HIDDEN, 16, bias=False)

        def colbert(**kw: Any) -> Any:
            vectors = linear(bert(**kw).last_hidden_state)
            return torch.nn.functional.normalize(vectors, dim=-1)

        export(colbert, [bert, linear], graph, inputs, {"contextual": 3})
    elif family == "jina-colbert":  # XLM-RoBERTa + projection, unit vectors in the graph
        encoder = transformers.XLMRobertaModel(cfg, add_pooling_layer=False).eval()
        linear = torch.nn.Linear(HIDDEN, 16, bias=False)

        def jina(**kw: Any) -> Any:
            vectors = linear(encoder(**kw).last_hidden_state)
            return torch.nn.functional.normalize(vectors, dim=-1)

        export(jina, [encoder, linear], graph, inputs, {"contextual": 3})
    elif lateon:  # BERT standing in for ModernBERT + projection; FastEmbed normalises after
        bert = transformers.BertModel(cfg, add_pooling_layer=False).eval()
        linear = torch.nn.Linear(HIDDEN, 16, bias=False)
        project = lambda **kw: linear(bert(**kw).last_hidden_state)  # noqa: E731
        export(project, [bert, linear], graph, inputs, {"token_embeddings": 3})
    elif family in ("rerank", "rerank-xlmr"):  # one logit per pair
        head = (
            transformers.XLMRobertaForSequenceClassification
            if xlmr
            else transformers.BertForSequenceClassification
        )
        classifier = head(cfg).eval()
        export(lambda **kw: classifier(**kw).logits, [classifier], graph, inputs, {"logits": 2})
    else:
        raise ValueError(family)
    return directory


def lay_out(source: Path, directory: Path, model_files: Iterable[str]) -> Path:
    """A copy of a family's directory with its graph under each of the given file names."""
    if not directory.exists():
        shutil.copytree(source, directory)
    for name in model_files:
        target = directory / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / "model.onnx", target)
    return directory


def build_vit(directory: Path, preprocessor_config: Path, image_size: int) -> Path:
    """A small random ViT whose graph gives its token states (last_hidden_state, CLS first), as
    nomic-embed-vision's does; preprocessing from the given preprocessor_config.json. It is
    768 wide, one layer deep: FastEmbed reshapes the states by the catalogued dimension."""
    import torch
    import transformers

    torch.manual_seed(5)
    config = transformers.ViTConfig(
        image_size=image_size,
        patch_size=8,
        hidden_size=768,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    vit = transformers.ViTModel(config, add_pooling_layer=False).eval()
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(preprocessor_config, directory / "preprocessor_config.json")
    sample = (torch.rand(2, 3, image_size, image_size),)
    states = {"last_hidden_state": 3}
    export(
        lambda **kw: vit(**kw).last_hidden_state,
        [vit],
        directory / "model.onnx",
        ("pixel_values",),
        states,
        sample,
    )
    return directory


SIGLIP_LENGTH = 16  # the tiny text tower's fixed length (SigLIP 2's is 64)


def build_siglip(root: Path, image_size: int) -> tuple[Path, Path]:
    """A tiny random SiglipModel (SigLIP 2's fixed-resolution checkpoints are SigLIP models):
    the text tower (input_ids only; last_hidden_state and pooler_output, the state of the last
    position through its head) and the vision tower (the same two outputs), each in a directory
    laid out as onnx-community's repository is, with FastEmbed's tokenizer files."""
    import torch
    import transformers

    torch.manual_seed(11)
    vocab = bert_vocab()
    tower = {"hidden_size": HIDDEN, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = transformers.SiglipConfig(
        text_config={
            **tower,
            "intermediate_size": 64,
            "vocab_size": len(vocab),
            "max_position_embeddings": SIGLIP_LENGTH,
            "pad_token_id": 0,
        },
        vision_config={**tower, "intermediate_size": 64, "image_size": image_size, "patch_size": 8},
    )
    model = transformers.SiglipModel(config).eval()
    text, vision = root / "siglip-text", root / "siglip-vision"
    save_bert_tokenizer(text, limit=SIGLIP_LENGTH)
    outputs = {"last_hidden_state": 3, "pooler_output": 2}

    def text_tower(**kw: Any) -> Any:
        out = model.text_model(**kw)
        return out.last_hidden_state, out.pooler_output

    def vision_tower(**kw: Any) -> Any:
        out = model.vision_model(**kw)
        return out.last_hidden_state, out.pooler_output

    export(text_tower, [model], text / "model.onnx", ("input_ids",), outputs)
    vision.mkdir(parents=True, exist_ok=True)
    write_json(
        vision / "preprocessor_config.json",
        {
            "image_processor_type": "SiglipImageProcessor",
            "do_resize": True,
            "size": {"height": image_size, "width": image_size},
            "resample": 2,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
        },
    )
    sample = (torch.rand(2, 3, image_size, image_size),)
    export(vision_tower, [model], vision / "model.onnx", ("pixel_values",), outputs, sample)
    return text, vision
