"""Reading lab.yaml: YAML with positions, duplicate keys, ${VAR} interpolation, override merge.

The result is plain data plus a map from each value's path to where it was written,
so that every later error can say FILE:LINE:COL.  Nothing here knows the lab's schema.

Hostile input ends in problems, never in a crash, a hang or exhausted memory:
- only regular files are read (decided on the opened descriptor: a FIFO cannot block),
  at most MAX_BYTES of them, as UTF-8 without raw control characters;
- the tree is built from the parser's events, without recursion, at most MAX_DEPTH deep
  and MAX_NODES large (reading stops at either), an alias counting as the size of what it
  repeats (an alias is the same Python object as its anchor, never a copy);
- only YAML's core tags; keys are strings, as written.

Scalars are read by the YAML 1.2 core schema (what editors and JSON Schema use): `yes`, `on`,
`010`'s octal reading and `12:30` are YAML 1.1 and are not special here.  Numbers keep the
text they were written as (YamlInt, YamlFloat), so that `1.10` can reach LXD as "1.10".
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, cast

import yaml

Path_ = tuple[Any, ...]

MAX_BYTES = 4 * 1024 * 1024  # a lab file is a few kilobytes
MAX_DEPTH = 64  # nesting of mappings and sequences
MAX_NODES = 200_000  # values in a file, each alias counted as the size of what it repeats
MAX_INT_DIGITS = 4300  # Python's own limit for converting decimal text to int
MAX_LISTED = 10  # control characters listed one by one
MAX_SHOWN = 1000  # problems printed; the rest are counted

# The C parser (libyaml) when PyYAML was built with it: ~20 times faster than the Python one.
PARSER: type = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One error in the input, with where it was written."""

    location: Location
    path: Path_
    message: str

    def __str__(self) -> str:
        # One line whatever the input held: a key or value quoted in the message may carry a newline.
        return f"{self.location}: {field_path(self.path) or '(top level)'}: {visible(self.message)}"


class SourceError(Exception):
    """Every problem found in the input at once."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.location.file, p.location.line, p.location.column))
        lines = [str(p) for p in self.problems[:MAX_SHOWN]]
        if len(self.problems) > MAX_SHOWN:
            lines.append(f"{self.problems[MAX_SHOWN].location}: (top level): {len(self.problems) - MAX_SHOWN}"
                         " more problems from here on are not shown")
        super().__init__("\n".join(lines))


def visible(text: str) -> str:
    """`text` with every character that is not printable as an escape: one line, no terminal controls."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return {9: "\\t", 10: "\\n", 13: "\\r"}.get(code) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")  # a key written as .key in a field path; any other as ["key"]


def field_path(path: Iterable[Any]) -> str:
    """A field's path as every message writes it: ('containers', 'web1', 'files', '/x', 'template', 0) ->
    'containers.web1.files["/x"].template[0]'; a key of other than letters, digits, '_' and '-' (a
    config key such as limits.cpu, a file path) in brackets and double quotes, on one printable line."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
            continue
        text = str(part)
        if PLAIN_KEY.fullmatch(text):
            out += f".{text}" if out else text
        else:
            out += '["' + visible(text).replace('"', '\\"') + '"]'
    return out


class PathSet:
    """Places in the data (paths), asked whether a path lies at or under one of them, or holds one."""

    def __init__(self, paths: Iterable[Path_] = ()):
        self.paths = frozenset(paths)
        self._holding = {p[:end] for p in self.paths for end in range(len(p) + 1)}

    def __bool__(self) -> bool:
        return bool(self.paths)

    def at(self, path: Path_) -> bool:
        """`path` is one of the places, or lies under one."""
        return any(path[:end] in self.paths for end in range(len(path) + 1))

    def within(self, path: Path_) -> bool:
        """One of the places is `path` or lies under it."""
        return path in self._holding

    def under(self, prefix: Path_) -> PathSet:
        """The places under `prefix`, as paths from it."""
        return PathSet(p[len(prefix):] for p in self.paths if p[:len(prefix)] == prefix)


NO_PATHS = PathSet()


@dataclass
class Document:
    """Plain data read from one or more files, and where each path was written."""

    data: Any
    places: dict[Path_, Location] = field(default_factory=dict)  # where each value starts
    keys: dict[Path_, Location] = field(default_factory=dict)  # where each mapping key is written
    files: list[str] = field(default_factory=list)
    literals: dict[Path_, Location] = field(default_factory=dict)  # literal block scalars' first lines

    def locate_line(self, path: Path_, line: int) -> Location | None:
        """Where line `line` (1-based) of a string value was written: known for a literal block scalar
        (`|`), whose lines are the file's; None for any other (folded or quoted lines are not)."""
        first = self.literals.get(path)
        return Location(first.file, first.line + line - 1, first.column) if first and line > 0 else None

    def locate(self, path: Path_, at_key: bool = False) -> Location:
        """The place of the longest prefix of `path` that was written in a file."""
        if at_key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            if path[:end] in self.places:
                return self.places[path[:end]]
        return Location(self.files[0] if self.files else "<input>", 1, 1)

    def problem(self, path: Path_, message: str, at_key: bool = False) -> Problem:
        return Problem(self.locate(path, at_key), path, message)


# --- Numbers as written ------------------------------------------------------------------

class YamlInt(int):
    """An int read from YAML, with the text it was written as (`010` is 10, text "010")."""

    text: str

    def __new__(cls, value: int, text: str | None = None) -> Self:
        number = super().__new__(cls, value)
        number.text = str(int(value)) if text is None else text
        return number

    def __getnewargs__(self) -> tuple[int, str]:  # type: ignore[override]
        return int(self), self.text


class YamlFloat(float):
    """A float read from YAML, with the text it was written as (`1.10` is 1.1, text "1.10")."""

    text: str

    def __new__(cls, value: float, text: str | None = None) -> Self:
        number = super().__new__(cls, value)
        number.text = repr(float(value)) if text is None else text
        return number

    def __getnewargs__(self) -> tuple[float, str]:  # type: ignore[override]
        return float(self), self.text


def as_written(value: Any) -> str | None:
    """The source text of a number read from YAML; None for anything else."""
    return getattr(value, "text", None) if isinstance(value, (YamlInt, YamlFloat)) else None


# --- Reading the bytes -----------------------------------------------------------------------

class _Refused(Exception):
    """The file cannot be read as a lab file; the message says why."""


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes: a regular file only, at most MAX_BYTES of them."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO without a writer returns at once
    except ValueError as err:  # a NUL in the name
        raise _Refused(f"cannot read: {err}") from None
    except OSError as err:
        reason = f"cannot read: {err.strerror}"
        if err.errno == errno.ENXIO:  # a socket (or a device without its driver)
            with contextlib.suppress(OSError):
                reason = f"is {_kind(os.stat(path).st_mode)}, not a regular file"
        raise _Refused(reason) from None
    try:
        info = os.fstat(fd)  # the descriptor, not the name: a symlink to /dev/zero is a device here
        if not stat.S_ISREG(info.st_mode):
            raise _Refused(f"is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > MAX_BYTES:
            raise _Refused(f"is {info.st_size} bytes; the limit is {MAX_BYTES} bytes (4 MiB)")
        chunks, size = [], 0
        while size <= MAX_BYTES:  # st_size can lie (/proc) or the file can grow: read at most MAX_BYTES + 1
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_BYTES:
            raise _Refused(f"is more than {MAX_BYTES} bytes; the limit is {MAX_BYTES} bytes (4 MiB)")
        return b"".join(chunks)
    except OSError as err:
        raise _Refused(f"cannot read: {err.strerror}") from None
    finally:
        os.close(fd)


def _decode(name: str, data: bytes) -> tuple[str, list[Problem]]:
    """UTF-8 text (a leading byte-order mark dropped), or the problem with its first bad byte."""
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    data = data[bom:]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as err:
        start = err.start
        line_start = data.rfind(b"\n", 0, start) + 1
        line = data.count(b"\n", 0, start) + 1
        column = len(data[line_start:start].decode("utf-8", "replace")) + 1
        hint = " (a UTF-16 file? save it as UTF-8)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else " (save it as UTF-8)"
        return "", [Problem(Location(name, line, column), (),
                            f"not UTF-8: byte 0x{data[start]:02x} at offset {bom + start} is not valid UTF-8{hint}")]


# Allowed: TAB, LF, CR LF.  Refused: other C0 controls (NUL too), DEL, C1 (U+0085 too), lone CR,
# U+2028/U+2029 (line breaks to YAML 1.1, not to editors) and the non-characters U+FFFE/U+FFFF.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufffe\uffff]|\r(?!\n)")


def _controls(name: str, text: str) -> list[Problem]:
    problems: list[Problem] = []
    found = _CONTROL.finditer(text)
    for match in found:
        if len(problems) == MAX_LISTED:
            more = 1 + sum(1 for _ in found)
            last = problems.pop()
            problems.append(Problem(last.location, (), f"{last.message} ({more} more control characters after this)"))
            break
        pos = match.start()
        line_start = text.rfind("\n", 0, pos) + 1
        code = ord(match.group()[0])
        what = "a carriage return without a line feed" if code == 13 else f"the control character U+{code:04X}"
        problems.append(Problem(Location(name, text.count("\n", 0, pos) + 1, pos - line_start + 1), (),
                                f"{what} is not allowed raw in YAML; write it as an escape in double quotes,"
                                f' such as "{_escape(chr(code))}"'))
    return problems


# --- The YAML 1.2 core schema --------------------------------------------------------------------

CORE = "tag:yaml.org,2002:"
_NULL = {"", "~", "null", "Null", "NULL"}
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_NAN = re.compile(r"\.(?:nan|NaN|NAN)")
_NUMBER_STARTS = frozenset("0123456789+-.")
_SCALAR_TAGS = {f"{CORE}{t}" for t in ("str", "int", "float", "bool", "null")}


def _shown(tag: str) -> str:
    return "!!" + tag[len(CORE):] if tag.startswith(CORE) else tag


def _core_int(text: str) -> YamlInt | str | None:
    """The int `text` stands for, or a problem (str), or None if it is not an int."""
    if _INT.fullmatch(text):
        if len(text.lstrip("+-")) > MAX_INT_DIGITS:
            return f"a number of more than {MAX_INT_DIGITS} digits is too long (quote it to make it a string)"
        return YamlInt(int(text, 10), text)
    if _OCT.fullmatch(text):
        return YamlInt(int(text, 0), text)
    if _HEX.fullmatch(text):
        return YamlInt(int(text, 0), text)
    return None


def _core_float(text: str) -> YamlFloat | None:
    if _FLOAT.fullmatch(text):
        return YamlFloat(float(text), text)
    if _INF.fullmatch(text):
        return YamlFloat(-math.inf if text.startswith("-") else math.inf, text)
    if _NAN.fullmatch(text):
        return YamlFloat(math.nan, text)
    return None


def _resolve(text: str, tag: str | None) -> tuple[Any, str | None]:
    """A plain scalar (tag None) by the core schema, or a scalar with a core tag: (value, problem)."""
    if tag is None:
        if text in _NULL:
            return None, None
        if text in _BOOL:
            return _BOOL[text], None
        if text[0] not in _NUMBER_STARTS:
            return text, None
        number = _core_int(text)
        if isinstance(number, str):
            return None, number
        if number is not None:
            return number, None
        value = _core_float(text)
        return (text if value is None else value), None
    kind = tag[len(CORE):]
    if kind == "str":
        return text, None
    if kind == "null" and text in _NULL:
        return None, None
    if kind == "bool" and text in _BOOL:
        return _BOOL[text], None
    if kind == "int":
        number = _core_int(text)
        if number is not None:
            return (None, number) if isinstance(number, str) else (number, None)
    if kind == "float":
        value = _core_float(text)
        if value is not None:
            return value, None
    return None, f"{text[:40]!r} is not a valid {_shown(tag)} value"


# --- The tree, from the parser's events -------------------------------------------------------------

_SCALAR, _MAP, _SEQ = 0, 1, 2
_KIND_NAMES = {_SCALAR: "a scalar", _MAP: "a mapping", _SEQ: "a sequence"}
_ALLOWED_TAGS = {_SCALAR: _SCALAR_TAGS | {CORE + "merge"}, _MAP: {CORE + "map"}, _SEQ: {CORE + "seq"}}
_CORE_TAGS = _SCALAR_TAGS | {CORE + "map", CORE + "seq", CORE + "merge"}


class _Node:
    """A finished value: its Python object, where it was written, its expanded size.

    A mapping keeps its winning (key place, value node) per key, a sequence its item nodes,
    so that the places of every path (under aliases too) can be listed afterwards.
    """

    __slots__ = ("broken", "items", "kind", "literal", "pairs", "place", "plain", "size", "text", "value")

    def __init__(self, kind: int, value: Any, place: Location, size: int = 1, broken: bool = False):
        self.kind, self.value, self.place, self.size = kind, value, place, size
        self.text: str | None = None  # a scalar's text (for use as a key)
        self.plain = False  # a plain, untagged scalar (`<<` is a merge key only then)
        self.broken = broken  # stands for a value whose problem is already reported
        self.literal: Location | None = None  # a literal block scalar (`|`): where its first line is
        if kind == _MAP:
            self.pairs: dict[str, tuple[Location, _Node]] = {}
        elif kind == _SEQ:
            self.items: list[_Node] = []


class _Frame:
    """A mapping or sequence being read."""

    __slots__ = ("anchor", "explicit", "for_merge", "key", "key_place", "kind", "merge_place", "merges", "node",
                 "path", "start")

    def __init__(self, kind: int, node: _Node, path: Path_, anchor: str | None, start: int, for_merge: bool):
        self.kind, self.node, self.path, self.anchor, self.start = kind, node, path, anchor, start
        self.key: Any = _NO_KEY  # a mapping: the key whose value comes next
        self.key_place: Location | None = None
        self.explicit: dict[str, tuple[Location, _Node]] = {}
        self.merges: list[_Node] = []  # mappings merged by `<<`, the first one winning
        self.merge_place: Location | None = None
        self.for_merge = for_merge  # a sequence that is the value of `<<`


_NO_KEY = object()  # a mapping's next event is a key
_DROP = object()  # the value that comes next is read and dropped (its key was a problem)
_MERGE = object()  # the value that comes next is merged (`<<`)


class _Stop(Exception):
    """Too deep or too large: stop reading this file (its problem is recorded)."""


class _Builder:
    def __init__(self, file: str, lines: list[str] | None = None):
        self.file = file
        self.lines = lines or []  # the text, to locate lines inside literal block scalars
        self.problems: list[Problem] = []
        self.anchors: dict[str, _Node | _Frame] = {}
        self.stack: list[_Frame] = []
        self.count = 0
        self.root: _Node | None = None
        self.documents = 0

    def place(self, event: yaml.Event) -> Location:
        mark = event.start_mark  # the parsers set it on every event
        return Location(self.file, mark.line + 1, mark.column + 1) if mark else Location(self.file, 1, 1)

    def problem(self, place: Location, path: Path_, message: str) -> None:
        self.problems.append(Problem(place, path, message))

    def spend(self, size: int, place: Location) -> None:
        self.count += size
        if self.count > MAX_NODES:
            self.problem(place, self.path_here(), f"more than {MAX_NODES} values, counting each alias as the"
                         " size of what it repeats (an alias bomb?); the file is not read further")
            raise _Stop

    def path_here(self) -> Path_:
        """The path of the value the next event starts."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if top.kind == _SEQ:
            return top.path + (len(top.node.items),)
        if isinstance(top.key, str):
            return top.path + (top.key,)
        return top.path + ("<<",) if top.key is _MERGE else top.path

    # -- events --

    def build(self, events: Iterable[yaml.Event]) -> None:
        for event in events:
            kind = type(event)
            if kind is yaml.ScalarEvent:
                place = self.place(event)
                self.spend(1, place)
                self._add(self._scalar(cast(yaml.ScalarEvent, event), place), place)
            elif kind is yaml.AliasEvent:
                place = self.place(event)
                self._add(self._alias(cast(yaml.AliasEvent, event), place), place)
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                self._start(cast(yaml.CollectionStartEvent, event))
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                frame = self.stack.pop()
                node = self._finish(frame)
                if frame.anchor is not None:
                    self.anchors[frame.anchor] = node
                self._add(node, node.place)
            elif kind is yaml.DocumentStartEvent:
                self.documents += 1
                if self.documents > 1:
                    self.problem(self.place(event), (), "a second YAML document (after `---`): a lab file"
                                 " holds one document")
                    return

    def _tag_problem(self, tag: str | None, kind: int, place: Location) -> bool:
        if tag is None or tag == "!" or tag in _ALLOWED_TAGS[kind]:
            return False
        if tag in _CORE_TAGS:
            message = f"the tag {_shown(tag)} cannot be on {_KIND_NAMES[kind]}"
        else:
            message = (f"unsupported tag {visible(_shown(tag))[:80]} (only YAML's core tags are read:"
                       " !!str !!int !!float !!bool !!null !!map !!seq)")
        self.problem(place, self.path_here(), message)
        return True

    def _scalar(self, event: yaml.ScalarEvent, place: Location) -> _Node:
        node = _Node(_SCALAR, None, place)
        node.text = event.value
        tag = event.tag
        if self._tag_problem(tag, _SCALAR, place):
            node.text, node.broken = None, True
        elif tag == CORE + "merge" and event.value != "<<":
            self.problem(place, self.path_here(), "the tag !!merge is for the merge key `<<` only")
            node.text, node.broken = None, True
        else:
            node.plain = tag == CORE + "merge" or (tag is None and event.implicit[0])
            top = self.stack[-1] if self.stack else None
            if (top is not None and top.kind == _MAP and top.key is _NO_KEY) or (not node.plain and tag in (None, "!")):
                node.value = event.value  # a key is its text; so is a quoted or block scalar, or one tagged `!`
            else:
                node.value, problem = _resolve(event.value, None if node.plain else tag)
                if problem:
                    self.problem(place, self.path_here(), problem)
        if event.style == "|":
            node.literal = self._first_line(place)
        if event.anchor is not None:
            self.anchors[event.anchor] = node
        return node

    def _first_line(self, place: Location) -> Location:
        """Where a literal block scalar's text starts: the line after its `|`, at its indentation."""
        line = self.lines[place.line] if place.line < len(self.lines) else ""
        return Location(self.file, place.line + 1, len(line) - len(line.lstrip(" ")) + 1)

    def _alias(self, event: yaml.AliasEvent, place: Location) -> _Node:
        target = self.anchors.get(str(event.anchor), _NO_KEY)
        if isinstance(target, _Node):
            self.spend(target.size, place)
            return target
        name = visible(str(event.anchor))[:80]
        if isinstance(target, _Frame):
            self.problem(place, self.path_here(), f"the alias *{name} is inside its own anchor &{name}"
                         " (a recursive structure)")
        else:
            self.problem(place, self.path_here(), f"undefined alias *{name} (no anchor &{name} before it)")
        return _Node(_SCALAR, None, place, broken=True)

    def _start(self, event: yaml.CollectionStartEvent) -> None:
        place = self.place(event)
        kind = _MAP if isinstance(event, yaml.MappingStartEvent) else _SEQ
        if len(self.stack) >= MAX_DEPTH:
            # Stop here: the Python parser's scanner slows down with every open flow level.
            self.problem(place, self.path_here(), f"nested more than {MAX_DEPTH} levels deep;"
                         " the file is not read further")
            raise _Stop
        self.spend(1, place)
        self._tag_problem(event.tag, kind, place)
        for_merge = bool(self.stack) and self.stack[-1].key is _MERGE
        frame = _Frame(kind, _Node(kind, {} if kind == _MAP else [], place), self.path_here(), event.anchor,
                       self.count - 1, for_merge)
        if event.anchor is not None:
            self.anchors[event.anchor] = frame  # in progress: an alias to it now is recursive
        self.stack.append(frame)

    def _finish(self, frame: _Frame) -> _Node:
        node = frame.node
        node.size = self.count - frame.start
        if frame.kind == _MAP:
            pairs: dict[str, tuple[Location, _Node]] = {}
            for source in reversed(frame.merges):  # YAML: the first mapping merged wins
                pairs.update(source.pairs)
            pairs.update(frame.explicit)  # and keys written in the mapping itself win over merged ones
            node.pairs = pairs
            node.value.update((key, value.value) for key, (_, value) in pairs.items())
        return node

    def _add(self, node: _Node, written: Location) -> None:
        """`node` (written at `written`: for an alias, the alias) is the next item, key or value."""
        if not self.stack:
            self.root = node
            return
        top = self.stack[-1]
        if top.kind == _SEQ:
            if top.for_merge and node.kind != _MAP and not node.broken:
                self.problem(written, self.path_here(), f"`<<` merges mappings, and this is {_KIND_NAMES[node.kind]}")
            top.node.items.append(node)
            top.node.value.append(node.value)
        elif top.key is _NO_KEY:
            self._key(top, node, written)
        else:
            key, top.key = top.key, _NO_KEY
            if key is _MERGE:
                self._merge(top, node, written)
            elif key is not _DROP:
                assert top.key_place is not None
                top.explicit[key] = (top.key_place, node)

    def _key(self, top: _Frame, node: _Node, written: Location) -> None:
        top.key, top.key_place = _DROP, written
        if node.broken:
            pass  # its problem is already reported
        elif node.kind != _SCALAR:
            self.problem(written, top.path, f"a key must be a string, not {_KIND_NAMES[node.kind]}")
        elif node.plain and node.text == "<<":
            if top.merge_place is not None:
                self.problem(written, top.path + ("<<",),
                             f"duplicate key (first defined at line {top.merge_place.line})")
            else:
                top.key, top.merge_place = _MERGE, written
        elif node.plain and node.text == "":
            self.problem(written, top.path, "a key cannot be empty")
        elif node.text in top.explicit:
            first = top.explicit[node.text][0]
            self.problem(written, top.path + (node.text,), f"duplicate key (first defined at line {first.line})")
        else:
            top.key = node.text  # a key is its text as written: `yes` is "yes", `80` is "80"

    def _merge(self, top: _Frame, node: _Node, written: Location) -> None:
        if node.kind == _MAP:
            top.merges.append(node)
        elif node.kind == _SEQ:
            top.merges.extend(item for item in node.items if item.kind == _MAP)  # others: reported in _add
        elif not node.broken:
            self.problem(written, top.path + ("<<",), "`<<` (a merge key) takes a mapping or a list of"
                         " mappings, such as *name or [*a, *b]")

    # -- places --

    def places(self) -> tuple[dict[Path_, Location], dict[Path_, Location], dict[Path_, Location]]:
        """Where each path was written, under aliases too (at most MAX_NODES of them): its value, its
        key, and a literal block scalar's first line."""
        places: dict[Path_, Location] = {}
        keys: dict[Path_, Location] = {}
        literals: dict[Path_, Location] = {}
        todo: list[tuple[_Node, Path_]] = [(self.root, ())] if self.root is not None else []
        while todo:
            node, path = todo.pop()
            places[path] = node.place
            if node.kind == _SCALAR and node.literal is not None:
                literals[path] = node.literal
            if node.kind == _MAP:
                for key, (key_place, value) in node.pairs.items():
                    keys[path + (key,)] = key_place
                    todo.append((value, path + (key,)))
            elif node.kind == _SEQ:
                todo.extend((item, path + (i,)) for i, item in enumerate(node.items))
        return places, keys, literals


def _parse(name: str, text: str) -> tuple[Document | None, list[Problem]]:
    builder = _Builder(name, text.splitlines())
    try:
        builder.build(yaml.parse(text, Loader=PARSER))
    except _Stop:
        return None, builder.problems
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name, 1, 1)
        what = getattr(err, "problem", None) or getattr(err, "context", None) or str(err).splitlines()[0]
        builder.problems.append(Problem(where, (), f"invalid YAML: {what}"))
        return None, builder.problems
    if builder.documents > 1:
        return None, builder.problems
    places, keys, literals = builder.places()
    data = builder.root.value if builder.root is not None else {}
    return Document(data, places, keys, [name], literals), builder.problems


def _read(path: Path) -> tuple[Document | None, list[Problem]]:
    """One file as a Document (None if it could not be read at all) and every problem found in it."""
    name = str(path)
    try:
        data = _read_bytes(path)
    except _Refused as err:
        return None, [Problem(Location(name, 1, 1), (), str(err))]
    text, problems = _decode(name, data)
    if problems:
        return None, problems
    problems = _controls(name, text)
    if problems:
        return None, problems
    return _parse(name, text)


def read_yaml(path: Path) -> Document:
    """Parse one YAML file into a Document; every problem in it is raised as one SourceError."""
    doc, problems = _read(path)
    if problems or doc is None:
        raise SourceError(problems)
    return doc


# --- Interpolation -------------------------------------------------------------------

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$\{[^}]*\}?")


def interpolate(doc: Document, env: Mapping[str, str]) -> list[Problem]:
    """Replace ${VAR} and ${VAR:-default} in every string value, in place; $$ is a literal $.

    A problem is reported once per place it was written (a value under many aliases is one
    place), at most MAX_LISTED per value and then their count.
    """
    problems: dict[tuple[Location, str], Problem] = {}

    def substitute(text: str, path: Path_) -> str:
        found: dict[str, None] = {}  # this value's problems, once each, in order

        def one(match: re.Match) -> str:
            whole, name, default = match.group(0), match.group(1), match.group(2)
            if whole == "$$":
                return "$"
            if name is None:
                shown = whole if len(whole) <= 60 else whole[:57] + "..."
                found[f"malformed variable reference {shown!r}"] = None
                return whole
            value = env.get(name)
            if value is None or (value == "" and ":-" in whole):
                if default is not None:
                    return default
                found[f"environment variable {name} is not set (set it, or write ${{{name}:-default}})"] = None
                return ""
            return value

        if "$" not in text:
            return text
        text = _VAR.sub(one, text)
        messages = list(found)
        if len(messages) > MAX_LISTED:
            messages[MAX_LISTED:] = [f"{len(messages) - MAX_LISTED} more variable problems in this value"]
        for message in messages:
            problem = doc.problem(path, message)
            problems.setdefault((problem.location, message), problem)
        return text

    doc.data = _map_strings(doc.data, (), substitute)
    return list(problems.values())


def _map_strings(value: Any, path: Path_, fn: Callable[[str, Path_], str]) -> Any:
    # Recursion as deep as the data: at most MAX_DEPTH for data read here.
    if isinstance(value, str):
        return fn(value, path)
    if isinstance(value, dict):
        return {k: _map_strings(v, path + (k,), fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, path + (i,), fn) for i, v in enumerate(value)]
    return value


# --- Override merge --------------------------------------------------------------------

def override_path(path: Path) -> Path:
    """lab.yaml -> lab.override.yaml (the file merged automatically, as Compose does)."""
    return path.with_name(f"{path.stem}.override{path.suffix or '.yaml'}")


OVERRIDE_NAME = re.compile(r"(?P<lab>.+)\.override(?:\.[^/]+)?(?P<suffix>\.ya?ml)")


def overridden(path: Path) -> Path | None:
    """The lab file an override is named for, beside it: lab.override.yaml and lab.override.example.yaml
    -> lab.yaml; None for a file not named NAME.override.yaml or NAME.override.SOMETHING.yaml."""
    match = OVERRIDE_NAME.fullmatch(path.name)
    return path.with_name(match["lab"] + match["suffix"]) if match else None


def merge(base: Document, over: Document) -> Document:
    """Mappings merge key by key, `key: null` removes a key; any other value replaces the base's."""
    adopted: set[Path_] = set()  # paths whose value now comes from the override
    removed: set[Path_] = set()

    def go(a: Any, b: Any, path: Path_) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for key, value in b.items():
                if value is None:
                    out.pop(key, None)  # `key: null` in the override removes the key
                    removed.add(path + (key,))
                elif key in a:
                    out[key] = go(a[key], value, path + (key,))
                else:
                    out[key] = value
                    adopted.add(path + (key,))
            return out
        adopted.add(path)
        return b

    def under(path: Path_, roots: set[Path_]) -> bool:
        return any(path[:end] in roots for end in range(len(path) + 1))

    data = go(base.data, over.data, ())
    gone = adopted | removed
    tables = []
    for old, new in ((base.places, over.places), (base.keys, over.keys), (base.literals, over.literals)):
        table = {p: loc for p, loc in old.items() if not under(p, gone)}
        table.update({p: loc for p, loc in new.items() if under(p, adopted)})
        tables.append(table)
    return Document(data, tables[0], tables[1], base.files + over.files, tables[2])


def lab_files(path: Path) -> list[Path]:
    """lab.yaml, and lab.override.yaml beside it when there is one (a dangling symlink too: reported)."""
    extra = override_path(path)
    return [path, extra] if os.path.lexists(extra) else [path]


def read_documents(files: Sequence[Path], env: Mapping[str, str] | None = None) -> tuple[Document | None, list[Problem]]:
    """Read each file, merge each onto the one before it (an override onto its base), then interpolate
    the environment in the result.

    Every problem at once: those of every file (each is read even when another is bad) and those of
    interpolation.  The Document is None when a file could not be read at all; otherwise it is there
    even with problems, its values at `unread(problems)` not as written (so that the rest can still
    be checked).
    """
    problems: list[Problem] = []
    docs: list[Document] = []
    for file in files:
        doc, found = _read(file)
        problems += found
        if doc is not None and not isinstance(doc.data, dict):
            problems.append(doc.problem((), "the top level must be a mapping"))
        elif doc is not None:
            docs.append(doc)
    if not docs:
        return None, problems
    doc = docs[0]
    for other in docs[1:]:
        doc = merge(doc, other)
    problems += interpolate(doc, os.environ if env is None else env)
    return (doc if len(docs) == len(files) else None), problems  # without a file, another lab


def unread(problems: Iterable[Problem]) -> PathSet:
    """Where a Document read with these problems may hold other than what was written: a duplicate key's
    second value is dropped, a value of a refused tag or alias is null, an unset variable is empty, and
    a mapping with a bad merge key `<<` lacks what it would have merged."""
    return PathSet(p.path[:p.path.index("<<")] if "<<" in p.path else p.path for p in problems)


def load_document(path: Path, env: Mapping[str, str] | None = None) -> Document:
    """Read lab.yaml, merge its override file if present, then interpolate the environment; raise
    SourceError with every problem of them."""
    doc, problems = read_documents(lab_files(path), env)
    if problems or doc is None:
        raise SourceError(problems)
    return doc
