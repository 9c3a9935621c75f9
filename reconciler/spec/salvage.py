"""Pass 1's salvage: an entry that fails, with each failed part left out or stood in for, so that
passes 2 and 3 check all the rest."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from .locations import data_path
from .models import KIND_STAND_INS

# A part of an entry (or of the top level) that fails pass 1 is left out, or stood in for where its
# place must stay, so that pass 2 and 3 check all the rest.  A pattern's step "*" is any key or index,
# a tuple any of its keys.
#
# Parts whose fields are judged together (a device's keys, an ACL rule's, an access rule's): when
# anything inside one fails, the whole part fails, so that no check sees it half there.
WHOLE_PARTS: tuple[tuple, ...] = (
    ("*", "*", "devices", "*"),
    ("acls", "*", ("ingress", "egress"), "*"),
    ("haproxy", "*", "frontends", "*", ("access", "routes"), "*"),
    ("haproxy", "*", "frontends", "*", "tls"),
    ("haproxy", "*", "conditions", "*"),
    ("haproxy", "*", "stats")
)
# Valid, harmless values that stand in for a failed part whose place must stay: the entry keeps its
# names (a file's path, a config key, a backend's name) and its lists their indexes, for the checks of
# everything else.  A failed part without one is left out: a field then has its default.
STAND_INS: tuple[tuple[tuple, Any], ...] = (
    (("lab",), "invalid"),
    (("project", "config", "*"), "invalid"),
    (("containers", "*", "image"), "invalid"),
    (("*", "*", ("config", "vars"), "*"), "invalid"),
    (("*", "*", "devices", "*"), {"type": "none"}),
    (("containers", "*", "files", "*"), {"type": "directory"}),
    (("containers", "*", "services", "*"), {}),
    (("acls", "*", ("ingress", "egress"), "*"), {"action": "allow"}),
    (("haproxy", "*", "frontends", "*"), {"bind": ":1"}),
    (("haproxy", "*", "frontends", "*", "bind"), ":1"),
    (("haproxy", "*", "frontends", "*", "access", "*"), {"action": "deny"}),
    (("haproxy", "*", "frontends", "*", "routes", "*"), {"host": "invalid", "backend": "invalid"}),
    (("haproxy", "*", "backends", "*"), {}),
    (("haproxy", "*", "backends", "*", "servers", "*"), {"container": "invalid"}),
    # A server's fields are judged one by one: a bad port leaves its name and container checked.
    (("haproxy", "*", "backends", "*", "servers", "*", "container"), "invalid"),
    (("haproxy", "*", "conditions", "*"), {"method": "GET"}),
    *KIND_STAND_INS,  # those of the kinds' own tables (LabTable.stand_ins)
)
SALVAGE_ROUNDS = 8  # each round replaces what failed: a part, then what held it (nesting is shallow)


class Salvaged(NamedTuple):
    """An entry that failed pass 1, without what failed in it."""

    model: BaseModel
    failed: frozenset[tuple]  # the parts left out or stood in for, from the top of the document


def salvage_entry(model: type[BaseModel], entry: Any, errors: list[Any], context: dict,
             where: tuple) -> Salvaged | None:
    """The entry (at `where`) with each part that failed left out or stood in for, and those parts.

    Checks never judge a failed part, nor what depends on it (Declared.failed says which): a stand-in
    or a default is no fact.  None when the entry itself failed (not a mapping, say).
    """
    if not isinstance(entry, dict):
        return None
    rest, copied, failed = dict(entry), set[int](), set[tuple]()
    for _ in range(SALVAGE_ROUNDS):
        found = [_failed_part(rest, where, data_path(rest, tuple(e["loc"]))) for e in errors]
        parts = {part for part in found if part is not None}
        if len(parts) < len(set(found)) or not parts - failed:
            return None  # the entry itself failed, or a stand-in did
        for part in sorted(parts, key=len):  # a part inside another one replaced is gone with it
            if not any(part[:end] in failed for end in range(len(part))):
                _replace(rest, part[len(where):], _stand_in(part), copied)
                failed.add(part)
        try:
            return Salvaged(model.model_validate(rest, context=context), frozenset(failed))
        except ValidationError as again:
            errors = again.errors()
    return None


def _matches(path: tuple, pattern: tuple) -> bool:
    return len(path) == len(pattern) and all(
        step == "*" or part == step or (isinstance(step, tuple) and part in step) for part, step in zip(path, pattern))


def _by_length(table: Iterable[Any], pattern: Callable[[Any], tuple]) -> dict[int, list[Any]]:
    """A table of patterns by their length: a path is matched against those of its own length only."""
    out: dict[int, list[Any]] = {}
    for row in table:
        out.setdefault(len(pattern(row)), []).append(row)
    return out


_WHOLE_PARTS = _by_length(WHOLE_PARTS, lambda pattern: pattern)
_STAND_INS = _by_length(STAND_INS, lambda row: row[0])


def _failed_part(entry: dict, where: tuple, path: tuple) -> tuple | None:
    """What fails with an error at `path` in the entry: the whole part holding it, or else the deepest
    mapping item (a field, a file, a config key) or list item with a stand-in on its way that is written."""
    node: Any = entry
    deepest = None
    for end, step in enumerate(path, start=1):
        if isinstance(node, dict) and step in node:
            deepest = where + path[:end]
        elif not (isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)):
            break
        elif _stand_in(where + path[:end]) is not _LEAVE_OUT:
            deepest = where + path[:end]  # a list item with a stand-in (a server written as a cfg line) keeps its place
        if any(_matches(where + path[:end], pattern) for pattern in _WHOLE_PARTS.get(len(where) + end, ())):
            return where + path[:end]
        node = node[step]
    return deepest


_LEAVE_OUT = object()


def _stand_in(part: tuple) -> Any:
    stand_ins = _STAND_INS.get(len(part), ())
    return next((copy.deepcopy(value) for pattern, value in stand_ins if _matches(part, pattern)), _LEAVE_OUT)


def _replace(entry: dict, path: tuple, value: Any, copied: set[int]) -> None:
    """Put `value` at `path` in the entry (or delete it: _LEAVE_OUT), copying what holds it first: the
    document's data is never changed, and a value repeated by YAML aliases is changed at one place."""
    node: Any = entry
    for step in path[:-1]:
        child = node[step]
        if id(child) not in copied:
            child = dict(child) if isinstance(child, dict) else list(child)
            node[step] = child
            copied.add(id(child))
        node = child
    if value is _LEAVE_OUT:
        if isinstance(node, dict):
            del node[path[-1]]
    else:
        node[path[-1]] = value
