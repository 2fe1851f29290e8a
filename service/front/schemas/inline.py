"""A model's JSON schema with its definitions inlined, for a request body declared by hand in
the OpenAPI document (routes that read their body themselves): pydantic's schema points into
its own ``$defs``, which the OpenAPI document does not carry."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})
    prefix = "#/$defs/"

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**resolve(defs[ref[len(prefix) :]]), **resolve(rest)}
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
