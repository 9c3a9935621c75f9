"""Reading lab.yaml: YAML with positions, duplicate keys, ${VAR} interpolation, override merge.

The result is plain data plus a map from each value's path to where it was written,
so that every later error can say FILE:LINE:COL.  Nothing here knows the lab's schema.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

Path_ = tuple[Any, ...]


@dataclass(frozen=True)
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
        return f"{self.location}: {dotted(self.path) or '(top level)'}: {self.message}"


class SourceError(Exception):
    """Every problem found in the input at once."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.location.file, p.location.line, p.location.column))
        super().__init__("\n".join(str(p) for p in self.problems))


def dotted(path: Path_) -> str:
    """('containers', 'web1', 'profiles', 0) -> 'containers.web1.profiles[0]'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "." in str(part) or " " in str(part):
            out += f'["{part}"]'  # a config key such as limits.cpu
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Document:
    """Plain data read from one or more files, and where each path was written."""

    data: Any
    places: dict[Path_, Location] = field(default_factory=dict)  # where each value starts
    keys: dict[Path_, Location] = field(default_factory=dict)  # where each mapping key is written
    files: list[str] = field(default_factory=list)

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


# --- YAML with positions -------------------------------------------------------------

def _place(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Walker:
    """Turns a composed YAML node tree into plain data, recording positions and duplicates."""

    def __init__(self, file: str):
        self.file = file
        self.loader = yaml.SafeLoader("")
        self.places: dict[Path_, Location] = {}
        self.keys: dict[Path_, Location] = {}
        self.problems: list[Problem] = []

    def walk(self, node: yaml.Node, path: Path_) -> Any:
        self.places[path] = _place(self.file, node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node)

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict:
        self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        out: dict = {}
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node)
            if key in out:
                first = self.keys[path + (key,)]
                self.problems.append(Problem(_place(self.file, key_node), path + (key,),
                                             f"duplicate key (first defined at line {first.line})"))
                continue
            self.keys[path + (key,)] = _place(self.file, key_node)
            out[key] = self.walk(value_node, path + (key,))
        return out


def read_yaml(path: Path) -> Document:
    """Parse one YAML file into a Document; syntax errors and duplicate keys are Problems."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SourceError([Problem(Location(name, 1, 1), (), f"cannot read: {err.strerror}")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name, 1, 1)
        raise SourceError([Problem(where, (), f"invalid YAML: {err.problem or err.context}")]) from None
    walker = _Walker(name)
    data = walker.walk(node, ()) if node is not None else {}
    if walker.problems:
        raise SourceError(walker.problems)
    return Document(data, walker.places, walker.keys, [name])


# --- Interpolation -------------------------------------------------------------------

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$\{[^}]*\}?")


def interpolate(doc: Document, env: Mapping[str, str]) -> list[Problem]:
    """Replace ${VAR} and ${VAR:-default} in every string value, in place; $$ is a literal $."""
    problems: list[Problem] = []

    def substitute(text: str, path: Path_) -> str:
        def one(match: re.Match) -> str:
            whole, name, default = match.group(0), match.group(1), match.group(2)
            if whole == "$$":
                return "$"
            if name is None:
                problems.append(doc.problem(path, f"malformed variable reference {whole!r}"))
                return whole
            value = env.get(name)
            if value is None or (value == "" and ":-" in whole):
                if default is not None:
                    return default
                problems.append(doc.problem(path, f"environment variable {name} is not set"
                                            " (set it, or write ${" + name + ":-default})"))
                return ""
            return value
        return _VAR.sub(one, text)

    doc.data = _map_strings(doc.data, (), substitute)
    return problems


def _map_strings(value: Any, path: Path_, fn) -> Any:
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


def merge(base: Document, over: Document) -> Document:
    """Mappings merge key by key, `key: null` removes a key; any other value replaces the base's."""
    places, keys = dict(base.places), dict(base.keys)

    def go(a: Any, b: Any, path: Path_) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for key, value in b.items():
                if value is None:
                    out.pop(key, None)  # `key: null` in the override removes the key
                else:
                    out[key] = go(a[key], value, path + (key,)) if key in a else _adopt(value, path + (key,))
            return out
        return _adopt(b, path)

    def _adopt(value: Any, path: Path_) -> Any:
        for table, new in ((places, over.places), (keys, over.keys)):
            for p in [p for p in table if p[: len(path)] == path]:
                del table[p]
            table.update({p: loc for p, loc in new.items() if p[: len(path)] == path})
        return value

    data = go(base.data, over.data, ())
    return Document(data, places, keys, base.files + over.files)


def load_document(path: Path, env: Mapping[str, str] | None = None) -> Document:
    """Read lab.yaml, merge its override file if present, then interpolate the environment."""
    doc = read_yaml(path)
    extra = override_path(path)
    if extra.exists():
        doc = merge(doc, read_yaml(extra))
    if not isinstance(doc.data, dict):
        raise SourceError([doc.problem((), "the top level must be a mapping")])
    problems = interpolate(doc, os.environ if env is None else env)
    if problems:
        raise SourceError(problems)
    return doc
