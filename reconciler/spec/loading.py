"""Loading lab.yaml and its override: pass 1 (each entry on its own), then passes 2 and 3, every
problem reported together."""

from __future__ import annotations

import functools
import itertools
import re
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .. import haproxy as haproxy_spec
from ..source import NO_PATHS, Document, PathSet, Problem, SourceError, lab_files, read_documents, unread
from .checks import name_problems, value_problems
from .declared import COMPARED, Declared
from .locations import as_problem, pydantic_problems
from .models import TABLES, Lab, without_extensions
from .references import reference_problems
from .salvage import salvage_entry

Entries = dict[str, dict[str, Any]]  # table -> name -> model

HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
MAX_NAMED = 100_000  # (host, container) pairs files are read for: a hint, in bounded time and memory


def _hosts_served(data: Mapping, containers: set[str]) -> haproxy_spec.Serving:
    """Who serves a host name, as lab.yaml (as read) says: the containers its routes lead to, else those
    whose files name it.  For the hint of a server written as a host name; worked out when first asked."""
    @functools.cache
    def tables() -> tuple[dict[str, haproxy_spec.Served], dict[str, list[str]]]:
        return haproxy_spec.routed_hosts(data.get("haproxy"), containers), _hosts_in_files(data.get("containers"))

    def serving(host: str) -> haproxy_spec.Served | None:
        routed, named = tables()
        found = routed.get(host.lower())
        if found is None and named.get(host.lower()):
            found = haproxy_spec.Served(tuple(named[host.lower()]))
        return found
    return serving


def _hosts_in_files(containers: Any) -> dict[str, list[str]]:
    """host name (lowercase) -> the containers whose files' content or template names it (the first
    MAX_NAMED pairs); a text repeated by YAML aliases is read once."""
    hosts_of: dict[int, set[str]] = {}
    out: dict[str, dict[str, None]] = {}
    pairs = 0
    for cname, text in _file_texts(containers):
        if id(text) not in hosts_of:
            hosts_of[id(text)] = {m.group().lower() for m in itertools.islice(HOST_NAME.finditer(text), MAX_NAMED)}
        for host in itertools.islice(hosts_of[id(text)], MAX_NAMED - pairs):
            out.setdefault(host, {})[cname] = None
            pairs += 1
        if pairs >= MAX_NAMED:
            break
    return {host: list(names) for host, names in out.items()}


def _file_texts(containers: Any) -> Iterable[tuple[str, str]]:
    """(container, text) of each file's content or template, in lab.yaml as read (not yet validated)."""
    for cname, container in containers.items() if isinstance(containers, dict) else ():
        files = container.get("files") if isinstance(container, dict) else None
        for spec in files.values() if isinstance(files, dict) else ():
            for text in (spec.get("content"), spec.get("template")) if isinstance(spec, dict) else ():
                if isinstance(text, str):
                    yield str(cname), text


def _validate_entries(doc: Document, data: Mapping) -> tuple[Entries, Entries, PathSet, list[Problem]]:
    """Pass 1: each entry of each table on its own.

    Returns the valid entries, the invalid ones salvaged (`salvage_entry`), the parts that failed in them,
    and every problem of the invalid ones.
    """
    containers = data.get("containers")
    names = {str(k) for k in containers} if isinstance(containers, dict) else set()
    context = {"containers": names, "serving": _hosts_served(data, names), "hints": haproxy_spec.HintBudget(COMPARED)}
    valid: Entries = {table: {} for table in TABLES}
    salvaged: Entries = {table: {} for table in TABLES}
    failed: set[tuple] = set()
    problems: list[Problem] = []
    for table, model in TABLES.items():
        entries = data.get(table)
        for name, entry in entries.items() if isinstance(entries, dict) else ():
            try:
                valid[table][str(name)] = model.model_validate(entry, context=context)
            except ValidationError as err:
                errors = err.errors()
                problems += pydantic_problems(doc, errors, (table, name), model)
                salvage = salvage_entry(model, entry, errors, context, (table, str(name)))
                if salvage is not None:
                    salvaged[table][str(name)] = salvage.model
                    failed |= salvage.failed
    return valid, salvaged, PathSet(failed), problems


def _validate_shell(doc: Document, data: Mapping) -> tuple[Lab, PathSet, list[Problem]]:
    """The top level without the tables' entries; on errors, a Lab of what did validate (`salvage_entry`).

    Returns the Lab, the parts that failed (their values and names cannot be trusted), the problems.
    """
    shell = {k: ({} if k in TABLES and isinstance(v, dict) else v) for k, v in data.items()}
    try:
        return Lab.model_validate(shell), NO_PATHS, []
    except ValidationError as err:
        errors = err.errors()
        problems = pydantic_problems(doc, errors, (), Lab)
        salvage = salvage_entry(Lab, shell, errors, {}, ())
        if salvage is None:  # never seen: every key then counts as failed
            return Lab.model_validate({"lab": "invalid"}), PathSet((k,) for k in shell), problems
        return typing.cast(Lab, salvage.model), PathSet(salvage.failed), problems


def _names(data: Mapping, table: str, failed: PathSet) -> frozenset[str] | None:
    entries = data.get(table, {})
    return frozenset(map(str, entries)) if isinstance(entries, dict) and not failed.at((table,)) else None


def check_lab(doc: Document, folder: Path) -> tuple[Lab, list[Problem]]:
    """Every problem of the document (all three passes), and the Lab of its valid entries."""
    data = without_extensions(doc.data)
    valid, salvaged, failed_entries, problems = _validate_entries(doc, data)
    shell, failed_shell, shell_problems = _validate_shell(doc, data)
    failed = PathSet(failed_entries.paths | failed_shell.paths)
    lab = shell.model_copy(update=valid)
    everything = shell.model_copy(update={table: valid[table] | salvaged[table] for table in TABLES})
    declared = Declared({table: _names(data, table, failed) for table in TABLES}, failed=failed)
    found = name_problems(data) + value_problems(everything, folder, failed)
    found += reference_problems(everything, lab, declared)
    # What is said about a failed part (a stand-in's own values) is no fact; a bad name (a key) is.
    found = [f for f in found if f.at_key or not failed.at(f.path)]
    return lab, shell_problems + problems + [as_problem(doc, *f) for f in found]


def load_lab(path: str | Path, env: Mapping[str, str] | None = None,
             override: str | Path | None = None) -> tuple[Lab, Document]:
    """Load and validate lab.yaml and its override (lab.override.yaml beside it, or `override` instead);
    raise SourceError with every problem.

    A problem in reading (a duplicate key, an unset variable) stops nothing but the checks of the value
    it is about.  `source:` files are read relative to the lab file's folder, as plan and apply read them.
    """
    path = Path(path)
    doc, loaded = read_documents([path, Path(override)] if override else lab_files(path), env)
    if doc is None:
        raise SourceError(loaded)
    lab, checked = check_lab(doc, path.resolve().parent)
    unreliable = unread(loaded)  # a value not read as written: what the checks say of it is no news
    problems = loaded + [p for p in checked if not unreliable.at(p.path)]
    if problems:
        raise SourceError(problems)
    return lab, doc
