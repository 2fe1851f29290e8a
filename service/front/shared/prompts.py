"""Named prompts of a model: the text put before an input for one side or task.

"query" and "document" are the catalogue's prefixes (sentence-transformers' prompt names for
them, and Cohere's search_query / search_document); a catalogue row may name more under
``options.prompts`` (nomic's ``classification: `` and ``clustering: ``, say).
"""

from __future__ import annotations

from service.models.loaded import LoadedModel


def prompts(model: LoadedModel) -> dict[str, str]:
    """Every prompt the model knows, by name ("query" and "document" always)."""
    spec = model.spec
    extra = spec.options.get("prompts", {})
    named = {"query": spec.query_prefix, "document": spec.document_prefix}
    if isinstance(extra, dict):
        named.update({str(name): str(text) for name, text in extra.items()})
    return named


def with_prompt(model: LoadedModel, texts: list[str], name: str | None) -> list[str]:
    """`texts` behind the named prompt; a name the model has no prompt for adds nothing."""
    prefix = prompts(model).get(name or "", "")
    return [prefix + text for text in texts] if prefix else texts
