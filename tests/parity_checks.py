"""How each FastEmbed 0.9.1 model class is checked here, and by which test: the data behind
docs/fastembed-parity.md (`python -m tools.parity_table`). The parity tests select the names
they run from FastEmbed's own lists by these class names, and a test checks that the classes
test_fastembed_parity.py runs are exactly the ones this table sends there."""

from __future__ import annotations

PARITY = "tests/test_fastembed_parity.py"
ORACLE = "FastEmbed 0.9.1 on"

# FastEmbed class -> (how the service's vectors are checked, the test that checks them)
CHECKS: dict[str, tuple[str, str]] = {
    "OnnxTextEmbedding": (f"{ORACLE} tiny random BERT (CLS, L2)", PARITY),
    "PooledNormalizedEmbedding": (f"{ORACLE} tiny random BERT (mean, L2)", PARITY),
    "PooledEmbedding": (f"{ORACLE} tiny random BERT (mean, not normalised)", PARITY),
    "LastTokenNormalizedEmbedding": (f"{ORACLE} tiny random BERT (last token, L2)", PARITY),
    "BuiltinSentenceEmbedding": (f"{ORACLE} tiny random BERT with a pooled output 1", PARITY),
    "CLIPOnnxEmbedding": (f"{ORACLE} tiny random CLIP text tower", PARITY),
    "SpladePP": (f"{ORACLE} tiny random BertForMaskedLM", PARITY),
    "Colbert": (f"{ORACLE} tiny random ColBERT (BERT + projection)", PARITY),
    "LateOn": (f"{ORACLE} tiny random BERT + projection (for ModernBERT)", PARITY),
    "MLateOn": (f"{ORACLE} tiny random BERT + projection (for its encoder)", PARITY),
    "OnnxTextCrossEncoder": (f"{ORACLE} tiny random BERT / XLM-R cross-encoder", PARITY),
    "OnnxImageEmbedding": (
        f"{ORACLE} tiny random CLIP vision tower (transparent images: FastEmbed drops the "
        "alpha channel, the service composites it on white as transformers does)",
        PARITY,
    ),
    "StaticTextEmbedding": (
        "FastEmbed 0.9.1 and model2vec on tiny tables saved by model2vec (plain and "
        "vocabulary-quantized)",
        "tests/test_static_models.py",
    ),
    "NormalizedEmbedding": (
        f"{ORACLE} tiny random ViT (the CLS token state, L2; transparent images as above)",
        PARITY,
    ),
    "IfSplade": (f"{ORACLE} tiny random BertForMaskedLM and an idf.json", PARITY),
    "MiniCOIL": (
        f"{ORACLE} tiny random BERT token states, miniCOIL word matrices, vocabulary and "
        "stopwords (documents and queries)",
        PARITY,
    ),
    "SiglipOnnxTextEmbedding": (
        f"{ORACLE} tiny random SigLIP text tower (pooler_output by name, fixed padding)",
        PARITY,
    ),
    "SiglipOnnxImageEmbedding": (
        f"{ORACLE} tiny random SigLIP vision tower (pooler_output by name; opaque images)",
        PARITY,
    ),
    "Bm25": (f"{ORACLE} the real Qdrant/bm25 files", "tests/test_sparse_bm25.py"),
    "Bm42": (f"{ORACLE} the real attentions graph (`make models`)", "tests/test_sparse_bm42.py"),
    "ColPali": (
        "transformers' ColPali on a tiny random PaliGemma (FastEmbed loads one ColPali graph, "
        "which a tiny model does not export to faithfully: DESIGN.md)",
        "tests/test_multimodal_api.py",
    ),
    "ColModernVBERT": (
        f"{ORACLE} a tiny graph with model_v2.onnx's inputs and output (blank tiles dropped, "
        "tile features spliced at the image tokens): tiles, grids, prompts, masks; transparent "
        "pages composited on white, as for images",
        "tests/test_colmodernvbert.py",
    ),
    "JinaEmbeddingV3": (
        f"{ORACLE} tiny random BERT with a task_id input (queries task 0, documents 1)",
        PARITY,
    ),
    "JinaColbert": (
        f"{ORACLE} tiny random XLM-RoBERTa ColBERT (markers 250002/250003, attends to its "
        "query padding)",
        PARITY,
    ),
}
