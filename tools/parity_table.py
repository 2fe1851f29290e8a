"""The FastEmbed parity table of docs/fastembed-parity.md, generated: every model FastEmbed
0.9.1 lists (its six classes' list_supported_models, read from the installed package), the
catalogue row that serves it, the engine, the truncation limits, and how its vectors are
checked (tests/parity_checks.py).

    python -m tools.parity_table            # print the table
    python -m tools.parity_table --write    # rewrite it in docs/fastembed-parity.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from service.models.catalogue import ModelSpec, find_row, load_catalogue
from service.models.kinds.registry import handler_for
from tests.parity_checks import CHECKS

DOC = Path(__file__).resolve().parents[1] / "docs" / "fastembed-parity.md"
START, END = "<!-- parity:start -->", "<!-- parity:end -->"


def fastembed_classes() -> dict[str, list[Any]]:
    """kind -> FastEmbed's model classes of that kind, in FastEmbed's order."""
    import fastembed
    from fastembed.rerank.cross_encoder import TextCrossEncoder

    return {
        "dense": fastembed.TextEmbedding.EMBEDDINGS_REGISTRY,
        "sparse": fastembed.SparseTextEmbedding.EMBEDDINGS_REGISTRY,
        "late": fastembed.LateInteractionTextEmbedding.EMBEDDINGS_REGISTRY,
        "image": fastembed.ImageEmbedding.EMBEDDINGS_REGISTRY,
        "multimodal": fastembed.LateInteractionMultimodalEmbedding.EMBEDDINGS_REGISTRY,
        "rerank": TextCrossEncoder.CROSS_ENCODER_REGISTRY,
    }


def engine(spec: ModelSpec) -> str:
    handler = handler_for(spec)
    family = spec.options.get("family")
    if handler.runner is not None:
        return f"numpy token table, `{spec.source.model_file}`"
    if not handler.needs_session:
        return f"Python ({family}, no model run)"
    graph = f"ONNX Runtime, `{spec.source.model_file}`"
    if family == "if_splade":
        return f"{graph} (documents); `idf.json` lookup (queries, no model run)"
    return f"{graph} + {family} weights" if family in ("bm42", "minicoil") else graph


def limits(spec: ModelSpec) -> str:
    if not handler_for(spec).needs_text:
        return "n/a" if spec.kind == "image" else f"{spec.max_length}"
    if spec.fastembed_max_length:
        return f"{spec.max_length} (FastEmbed: {spec.fastembed_max_length})"
    return str(spec.max_length)


def rows() -> list[list[str]]:
    catalogue = load_catalogue()
    table = []
    for kind, classes in fastembed_classes().items():
        for cls in classes:
            for description in cls._list_supported_models():
                name = description.model
                spec = find_row(catalogue, name, [kind])
                how, test = CHECKS.get(cls.__name__, ("not checked", ""))
                where = f"{how} (`{Path(test).name}`)" if test else how
                if spec is None:
                    table.append([kind, f"`{name}`", "not served yet", "", "", cls.__name__])
                    continue
                served = f"`{name}`" if spec.name == name else f"`{name}` (as `{spec.name}`)"
                table.append([kind, served, engine(spec), limits(spec), where, cls.__name__])
    return table


def render() -> str:
    head = ["kind", "model (FastEmbed's name)", "engine", "max tokens", "how checked", "class"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows()]
    return "\n".join(lines)


def replaced(text: str, table: str) -> str:
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    return f"{before}{START}\n{table}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite the table in {DOC}")
    args = parser.parse_args(argv)
    table = render()
    if args.write:
        DOC.write_text(replaced(DOC.read_text(), table))
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
