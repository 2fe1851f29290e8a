"""A tiny stand-in for Qdrant/colmodernvbert's model_v2.onnx, laid out as FastEmbed loads the
model from a local directory: the graph, tokenizer.json (byte-level BPE with ModernBERT's
[CLS] $A [SEP] template and Idefics3's added tokens), tokenizer_config.json,
special_tokens_map.json, config.json (vision_config.image_size), preprocessor_config.json
(Idefics3ImageProcessor) and processor_config.json (image_seq_len).

No tiny ModernVBERT is exported here: the preprocessing (tiles, prompt tokens, markers,
padding, masks) is what the service must match, so the graph has the real one's inputs and
output and reads every one of them, with random weights:

- ``input_ids`` (batch, tokens), ``attention_mask`` (batch, tokens), ``pixel_values``
  (image batch, tiles, 3, S, S): as the real graph, it drops blank (all-zero) tiles, cuts
  each remaining tile into ``IMAGE_SEQ_LEN`` blocks and projects each block to a feature,
  and splices the features into the image-token positions of the whole batch in order (the
  image batch need not be the token batch: FastEmbed sends a batch of queries one blank tile);
- output (batch, tokens, 128): ``tanh(token embedding + spliced image feature + embedding of
  the absolute position + a projection of the masked mean of the first two)``, so a vector
  depends on its token, its tile's pixels, where it stands in the row and the whole unpadded
  row (the padding is right, as the real tokenizer's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

DIM = 128
TILE = 16  # max_image_size.longest_edge, and the vision tower's image_size
BLOCKS = 2  # blocks per tile edge: IMAGE_SEQ_LEN = BLOCKS ** 2 image tokens per tile
IMAGE_SEQ_LEN = BLOCKS * BLOCKS
PATCH = 4  # the vision tower's patch edge (real_architecture's): 16 patches a tile
LONGEST_EDGE = 3 * TILE  # size.longest_edge: up to 3 x 3 tiles
POSITIONS = 8192  # the row's max_length: the service warms up to it
GRID_MARKERS = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
ADDED = [
    "<|begin_of_text|>",
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *GRID_MARKERS,
]

# preprocessor_config.json as Idefics3 writes it; the variants change what the tests vary.
PREPROCESSOR: dict[str, Any] = {
    "image_processor_type": "Idefics3ImageProcessor",
    "do_convert_rgb": True,
    "do_resize": True,
    "size": {"longest_edge": LONGEST_EDGE},
    "do_image_splitting": True,
    "max_image_size": {"longest_edge": TILE},
    "resample": 1,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_pad": True,
}
VARIANTS: dict[str, dict[str, Any]] = {
    "resized": {},  # the real layout: longest edge to 3 tiles, then split
    "unresized": {"do_resize": False},  # tiles as the image needs; a small image is one tile
    "unsplit": {"do_image_splitting": False, "resample": 3},  # one square tile
}


def vocabulary() -> dict[str, int]:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    return {token: i for i, token in enumerate([*SPECIALS, *alphabet])}


def write_tokenizer(directory: Path) -> Tokenizer:
    vocab = vocabulary()
    tokenizer = Tokenizer(models.BPE(vocab, [], unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in SPECIALS])
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ADDED])
    tokenizer.save(str(directory / "tokenizer.json"))
    return tokenizer


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))


def graph(vocab_size: int, seed: int = 0) -> Any:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    block = TILE // BLOCKS
    weights = {
        "tokens": rng.normal(0, 0.5, (vocab_size, DIM)),
        "positions": rng.normal(0, 0.5, (POSITIONS, DIM)),
        "patches": rng.normal(0, 0.1, (3 * block * block, DIM)),
        "context": rng.normal(0, 0.2, (DIM, DIM)),
        "zero_feature": np.zeros((1, DIM)),
    }
    ints = {
        "tiles_shape": [-1, 3, BLOCKS, block, BLOCKS, block],
        "tile_flat": [-1, 3 * TILE * TILE],
        "block_flat": [-1, 3 * block * block],
        "features_flat": [-1, DIM],
        "flat": [-1],
        "axis1": [1],
        "zero": [0],
        "one": [1],
        "minus_one": [-1],
    }
    initializers = [
        numpy_helper.from_array(value.astype(np.float32), name) for name, value in weights.items()
    ]
    initializers += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints.items()]
    initializers.append(numpy_helper.from_array(np.array(0, np.int64), "scalar_zero"))
    initializers.append(numpy_helper.from_array(np.array(0.0, np.float32), "float_zero"))
    image_id = helper.make_tensor("image_id", TensorProto.INT64, [], [image_token_id()])
    node = helper.make_node
    nodes = [
        node("Constant", [], ["image_token"], value=image_id),
        # tiles: (N, 3, S, S); blank ones (all zero) are dropped, as the real graph does
        node("Reshape", ["pixel_values", "tile_flat"], ["tile_values"]),
        node("Abs", ["tile_values"], ["tile_abs"]),
        node("ReduceSum", ["tile_abs", "axis1"], ["tile_sum"], keepdims=0),
        node("Greater", ["tile_sum", "float_zero"], ["tile_real"]),
        node("NonZero", ["tile_real"], ["real_2d"]),
        node("Reshape", ["real_2d", "flat"], ["real_tiles"]),
        node("Reshape", ["pixel_values", "tiles_shape"], ["blocked"]),
        node("Transpose", ["blocked"], ["blocks"], perm=[0, 2, 4, 1, 3, 5]),
        node("Reshape", ["blocks", "block_flat"], ["block_values"]),
        node("MatMul", ["block_values", "patches"], ["block_features"]),
        node("Reshape", ["block_features", "tile_features_shape"], ["tile_features"]),
        node("Gather", ["tile_features", "real_tiles"], ["kept"], axis=0),
        node("Reshape", ["kept", "features_flat"], ["kept_flat"]),
        node("Concat", ["kept_flat", "zero_feature"], ["features"], axis=0),
        # the k-th image token of the batch (row by row) takes the k-th feature
        node("Reshape", ["input_ids", "flat"], ["ids_flat"]),
        node("Equal", ["ids_flat", "image_token"], ["is_image"]),
        node("Cast", ["is_image"], ["is_image_int"], to=TensorProto.INT64),
        node("CumSum", ["is_image_int", "scalar_zero"], ["image_rank"]),
        node("Sub", ["image_rank", "one"], ["image_index"]),
        node("Shape", ["kept_flat"], ["kept_shape"]),
        node("Slice", ["kept_shape", "zero", "one"], ["no_feature"]),
        node("Where", ["is_image", "image_index", "no_feature"], ["feature_index"]),
        node("Gather", ["features", "feature_index"], ["spliced_flat"], axis=0),
        node("Shape", ["input_ids"], ["ids_shape"]),
        node("Concat", ["ids_shape", "dim"], ["states_shape"], axis=0),
        node("Reshape", ["spliced_flat", "states_shape"], ["spliced"]),
        node("Gather", ["tokens", "input_ids"], ["embedded"], axis=0),
        node("Add", ["embedded", "spliced"], ["inputs"]),
        # the row's masked mean, projected
        node("Cast", ["attention_mask"], ["mask_float"], to=TensorProto.FLOAT),
        node("Unsqueeze", ["mask_float", "minus_one"], ["mask_3d"]),
        node("Mul", ["inputs", "mask_3d"], ["masked"]),
        node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=1),
        node("ReduceSum", ["mask_3d", "axis1"], ["count"], keepdims=1),
        node("Div", ["total", "count"], ["mean"]),
        node("MatMul", ["mean", "context"], ["row_context"]),
        # absolute positions 0 .. tokens - 1
        node("Shape", ["input_ids"], ["ids_shape_again"]),
        node("Slice", ["ids_shape_again", "one", "two"], ["length"]),
        node("Slice", ["positions", "zero", "length"], ["position_states"]),
        node("Add", ["inputs", "position_states"], ["placed"]),
        node("Add", ["placed", "row_context"], ["mixed"]),
        node("Tanh", ["mixed"], ["embeddings"]),
    ]
    initializers.append(numpy_helper.from_array(np.array([2], np.int64), "two"))
    initializers.append(numpy_helper.from_array(np.array([DIM], np.int64), "dim"))
    initializers.append(
        numpy_helper.from_array(np.array([-1, IMAGE_SEQ_LEN, DIM], np.int64), "tile_features_shape")
    )
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
        helper.make_tensor_value_info(
            "pixel_values", TensorProto.FLOAT, ["images", "tiles", 3, TILE, TILE]
        ),
    ]
    output = helper.make_tensor_value_info(
        "embeddings", TensorProto.FLOAT, ["batch", "tokens", DIM]
    )
    model = helper.make_model(
        helper.make_graph(nodes, "tiny-colmodernvbert", inputs, [output], initializers),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    onnx.checker.check_model(model)
    return model


def image_token_id() -> int:
    return len(vocabulary()) + ADDED.index("<image>")


def build(directory: Path, variant: str = "resized", model_file: str = "model_v2.onnx") -> Path:
    """The model directory for one preprocessor variant (VARIANTS); every variant has the
    same graph and tokenizer."""
    import onnx

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(directory)
    assert tokenizer.token_to_id("<image>") == image_token_id()
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    onnx.save(graph(vocab_size), str(directory / model_file))
    specials = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]"}
    specials |= {"sep_token": "[SEP]", "mask_token": "[MASK]"}
    write_json(directory / "special_tokens_map.json", specials)
    write_json(directory / "tokenizer_config.json", {"model_max_length": 8192, **specials})
    pad_id = tokenizer.token_to_id("[PAD]")
    vision = {"image_size": TILE, "patch_size": PATCH}
    write_json(directory / "config.json", {"pad_token_id": pad_id, "vision_config": vision})
    write_json(directory / "preprocessor_config.json", PREPROCESSOR | VARIANTS[variant])
    write_json(directory / "processor_config.json", {"image_seq_len": IMAGE_SEQ_LEN})
    return directory


def real_architecture() -> Any:
    """A tiny random ColModernVBERT of transformers' own (SigLIP tiles of TILE pixels in
    patches of 4, pixel shuffle 2: IMAGE_SEQ_LEN tokens a tile; ModernBERT; 128-d output)
    over this module's vocabulary, for checks of the batch layout in PyTorch."""
    import torch
    from transformers import ColModernVBertConfig, ColModernVBertForRetrieval, ModernVBertConfig

    ids = vocabulary()
    vocab_size = len(ids) + len(ADDED)
    text = {
        "model_type": "modernbert",
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 512,
        "pad_token_id": ids["[PAD]"],
        "cls_token_id": ids["[CLS]"],
        "sep_token_id": ids["[SEP]"],
        "bos_token_id": ids["[CLS]"],
        "eos_token_id": ids["[SEP]"],
    }
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": TILE,
        "patch_size": PATCH,
    }
    vlm = ModernVBertConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=image_token_id(),
        pixel_shuffle_factor=2,
    )
    torch.manual_seed(0)
    config = ColModernVBertConfig(vlm_config=vlm, embedding_dim=DIM)
    return ColModernVBertForRetrieval(config).eval()
