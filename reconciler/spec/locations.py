"""Pydantic's errors as Problems at FILE:LINE:COL: the path in lab.yaml an error is about, the
"did you mean" of an unknown field, and messages that print as one harmless line."""

from __future__ import annotations

import re
import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel

from .. import haproxy as haproxy_spec
from .. import values
from ..source import Document, Problem, as_written
from .declared import suggest
from .models import Lab

SCALAR_TAGS = {"bool", "int", "float", "str", "none", "bytes"}


def _is_union_tag(part: Any) -> bool:
    """Pydantic's name of a union member in an error's loc (not a key of lab.yaml)."""
    return isinstance(part, str) and (part in SCALAR_TAGS or not re.fullmatch(r"[a-z_][a-z0-9_.]*", part))


def _losing_branches(errors: list[Any]) -> list[Any]:
    """Errors of a union's scalar member when a richer member (a model, a checked string) also failed.

    `health_check: {bogus: 1}` is a mapping: "should be a valid boolean" would only confuse.
    """
    rich = {e["loc"][:i] for e in errors for i, p in enumerate(e["loc"]) if _is_union_tag(p)
            and p not in SCALAR_TAGS}
    return [e for e in errors if any(p in SCALAR_TAGS and e["loc"][:i] in rich for i, p in enumerate(e["loc"]))]


def as_problem(doc: Document, path: tuple, message: str, at_key: bool = False, line: int = 0) -> Problem:
    """A Problem that prints as one harmless line: a key or value with a control character is
    shown escaped (a terminal would obey an escape sequence; a newline would split the report).

    A line inside a value is located in the file when the value is a literal block (`|`), and
    named in the message otherwise."""
    place = doc.locate_line(path, line) if line else None
    if line and place is None:
        message = f"template line {line}: {message}"
    return Problem(place or doc.locate(path, at_key), path, _printable(message))  # the path: escaped by field_path()


def _printable(text: str) -> str:
    return values.UNSAFE.sub(lambda m: repr(m.group())[1:-1], text)


def pydantic_problems(doc: Document, errors: list[Any], prefix: tuple, model: type[BaseModel]) -> list[Problem]:
    """Pydantic's errors (a ValidationError's errors(), which it builds anew at each call) as Problems."""
    problems: list[Problem] = []
    losing = _losing_branches(errors)
    for item in errors:
        if item in losing:
            continue
        path = data_path(doc.data, prefix + tuple(item["loc"]))
        message = item["msg"].removeprefix("Value error, ")
        written = as_written(item.get("input"))
        if item["type"] == "string_type" and written is not None:
            message += f'; quote it: "{written}"'  # YAML read 1.10 as a number
        at_key = item["type"] == "extra_forbidden" or item["loc"][-1:] == ("[key]",)
        if item["type"] == "extra_forbidden":  # a "did you mean" costs: only for as many as are shown
            hint = _unknown_field_hint(model, prefix, path) if len(problems) < HINTED else ""
            message = "unknown field" + hint
        problems.append(as_problem(doc, path, message, at_key))
    return problems


HINTED = 200  # problems that get a "did you mean": bounded time whatever the file


def _unknown_field_hint(model: type[BaseModel], prefix: tuple, path: tuple) -> str:
    inner = path[len(prefix):]
    if model is haproxy_spec.HAProxy and haproxy_spec.unknown_field_hint(inner):
        return "; " + haproxy_spec.unknown_field_hint(inner)
    if not inner:
        return ""
    hint = suggest(str(inner[-1]), _fields_at(model, inner[:-1]))
    if not hint and len(path) > 1 and path[-1] in _fields_at(Lab, ()):  # haproxy: under its container
        hint = f"; {path[-1]}: goes at the top level of the file, not inside another entry"
    return hint


def _fields_at(tp: Any, path: tuple) -> list[str]:
    """The field names of the model at `path` inside model `tp` (dict keys and list indexes step in)."""
    for part in path:
        tp = _model_in(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
            tp = field.annotation if field else None
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    tp = _model_in(tp)
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return []
    return [f.alias or n for n, f in tp.model_fields.items()]


def _model_in(tp: Any) -> Any:
    """Annotated[X, ...] -> X; X | None and bool | Model -> the model (or X) of the union."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [_model_in(a) for a in typing.get_args(tp) if a is not type(None)]
        rich = [m for m in members if typing.get_origin(m) in (dict, list)
                or (isinstance(m, type) and issubclass(m, BaseModel))]
        return (rich or members)[0]
    return tp


def data_path(data: Any, loc: tuple) -> tuple:
    """Pydantic's loc without its internal steps (union members, validator names, [key])."""
    path: list = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or \
                (isinstance(node, list) and isinstance(part, int) and part < len(node)):
            node = node[part]
            path.append(part)
        elif isinstance(part, str) and not _is_union_tag(part) and not part.startswith("["):
            path.append(part)  # a missing field, where it would be
            node = None
    return tuple(path)
