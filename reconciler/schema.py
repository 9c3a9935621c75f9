"""The JSON Schemas an editor uses, made from the models' own (spec.json_schema): it sees lab.yaml as
written, before interpolation and before an override is merged.

- `${NAME}` and `${NAME:-default}` (source.py fills them into every string value, never into keys):
  wherever the models want a literal (a pattern, an enum, a constant, a boolean or a number), a string
  holding a placeholder is accepted as well, since its value is not known until the lab is loaded.
- An override (lab.override.yaml) is a partial lab: nothing in it is required (the lab it is merged
  into has it) and `key: null` removes a key.  Lists replace the base's whole, but their items are not
  held to required fields either, nor kept from null: the override schema is the lab's loosened, so it
  never refuses what a merge could make valid; unknown keys and bad values are still refused.

Pure functions on dicts; `if` and `not` are left alone, since loosening them would change what they
select or tighten what they refuse.
"""

from __future__ import annotations

from typing import Any

# A placeholder as source.py reads it; `$${` is a literal `$` and `{`, not one.
PLACEHOLDER = r"(?:^|[^$])(?:\$\$)*\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-[^}]*)?\}"
PLACEHOLDER_SCHEMA = {"type": "string", "pattern": PLACEHOLDER,
                      "description": "${NAME} or ${NAME:-default}: filled from the environment when the lab is loaded"}

_LITERAL_RULES = ("pattern", "enum", "const", "format", "maxLength")  # a non-empty placeholder meets minLength
_NOT_STRINGS = {"boolean", "integer", "number"}
_ANNOTATIONS = ("description", "title", "default", "examples")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs")
_ONE_SCHEMA = ("items", "additionalProperties", "then", "else", "contains")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")  # `if`, `not`, propertyNames: never walked


def _walk(node: Any, fn: Any) -> Any:
    """`node` with `fn` applied to each of its subschemas (those this module walks), inside out."""
    if not isinstance(node, dict):
        return node  # true / false
    out = dict(node)
    for key in _SCHEMA_MAPS:
        if key in out:
            out[key] = {name: fn(value) for name, value in out[key].items()}
    for key in _ONE_SCHEMA:
        if key in out:
            out[key] = fn(out[key])
    for key in _SCHEMA_LISTS:
        if key in out:
            out[key] = [fn(value) for value in out[key]]
    return out


def _wants_a_literal(node: dict) -> bool:
    types = node.get("type", [])
    types = {types} if isinstance(types, str) else set(types)
    return any(key in node for key in _LITERAL_RULES) or bool(types & _NOT_STRINGS and "string" not in types)


def with_placeholders(node: Any) -> Any:
    """The schema, accepting a placeholder wherever it wants a literal."""
    out = _walk(node, with_placeholders)
    if not isinstance(out, dict) or not _wants_a_literal(out):
        return out
    notes = {key: out.pop(key) for key in _ANNOTATIONS if key in out}
    return {"anyOf": [out, PLACEHOLDER_SCHEMA], **notes}


def partial(node: Any) -> Any:
    """The schema of an override: nothing required, and null (remove the key) wherever a type is named.

    Null goes into each node's own `type` rather than around it (anyOf), so that an editor still points
    at the deepest mistake; a literal (enum, const) takes it through its placeholder's branch."""
    out = _walk(node, partial)
    if not isinstance(out, dict):
        return out
    out.pop("required", None)
    if "type" in out and "enum" not in out and "const" not in out:
        types = [out["type"]] if isinstance(out["type"], str) else list(out["type"])
        out["type"] = types + ["null"] if "null" not in types else out["type"]
    for key in ("anyOf", "oneOf"):  # a branch that was only `required` now takes anything: so does the choice
        if key in out and {} in out[key]:
            del out[key]
    return out
