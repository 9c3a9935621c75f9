"""Fuzzing the loader: whatever the bytes, load_document and load_lab return or raise SourceError,
never anything else, with the C parser and with the Python one.  In-process, bounded.  No LXD."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from reconciler import source
from reconciler.source import SourceError, load_document, override_path, read_yaml
from reconciler.spec import load_lab

ROOT = Path(__file__).resolve().parent.parent
LAB_TEXT = (ROOT / "lab.yaml").read_text()
OVERRIDE_TEXT = (ROOT / "examples" / "lab.override.example.yaml").read_text()

# RECONCILER_FUZZ_EXAMPLES=5000 for a longer run.
FUZZ = settings(max_examples=int(os.environ.get("RECONCILER_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

PARSERS = [pytest.param(yaml.SafeLoader, id="python-parser")]
if getattr(yaml, "__with_libyaml__", False):
    PARSERS.insert(0, pytest.param(yaml.CSafeLoader, id="c-parser"))


@contextlib.contextmanager
def parser(loader: type) -> Iterator[None]:
    saved = source.PARSER
    source.PARSER = loader
    try:
        yield
    finally:
        source.PARSER = saved


@contextlib.contextmanager
def lab_files(lab: bytes, override: bytes | None = None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as directory:
        path = Path(directory) / "lab.yaml"
        path.write_bytes(lab)
        if override is not None:
            override_path(path).write_bytes(override)
        yield path


def returns_or_source_error(path: Path, validate: bool = False) -> None:
    """The property: a result or SourceError, whose problems print as one line each."""
    try:
        load_lab(path, {}) if validate else load_document(path, {})
    except SourceError as err:
        assert err.problems, "a SourceError without problems"
        for problem in err.problems:
            text = str(problem)
            assert "\n" not in text and "\r" not in text and text.isprintable(), repr(text)


# --- Random bytes -------------------------------------------------------------------------------

YAML_BITS = ["lab: demo\n", "- ", ": ", "? ", "[", "]", "{", "}", ",", "&a ", "*a", "&b ", "*b", "<<: ", "!!str ",
             "!!int ", "!foo ", "!!python/object:os.system ", "%TAG !! tag:x:\n", "---\n", "...\n", "'", '"', "|\n",
             ">-\n", "#", "\n", "  ", "\t", "\r\n", "\r", "\x00", "\x85", "\u2028", "\ufeff", "é", "${A}", "${",
             "$$", "010", "1.10", "12:30", "yes", "~", "null", ".inf", "0x1F", "x-", "containers:", "image: x\n",
             "\\", "\xff", "%YAML 1.1\n"]


@pytest.mark.parametrize("loader", PARSERS)
@FUZZ
@given(data=st.binary(max_size=3000))
def test_random_bytes(loader, data):
    with parser(loader), lab_files(data) as path:
        returns_or_source_error(path)


@pytest.mark.parametrize("loader", PARSERS)
@FUZZ
@given(bits=st.lists(st.sampled_from(YAML_BITS) | st.text(max_size=8), max_size=200))
def test_random_yaml_tokens(loader, bits):
    text = "".join(bits)
    with parser(loader), lab_files(text.encode("utf-8", "surrogatepass")) as path:
        returns_or_source_error(path, validate=True)


# --- Random trees ----------------------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
           | st.text(max_size=20) | st.sampled_from(["yes", "on", "010", "1.10", "12:30", "<<", "~", "", "${X}"]))
TREES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                     | st.dictionaries(st.text(max_size=10) | st.sampled_from(["<<", "lab", "x-a"]), inner, max_size=5),
                     max_leaves=60)


def mutate(text: bytes, edits: list[tuple[float, int, bytes]]) -> bytes:
    """Each edit: at a relative position, delete some bytes and insert others."""
    for where, cut, insert in edits:
        at = int(where * len(text))
        text = text[:at] + insert + text[at + cut:]
    return text


EDITS = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 8),
                           st.sampled_from([b.encode("utf-8") for b in YAML_BITS]) | st.binary(max_size=4)),
                 max_size=6)


@pytest.mark.parametrize("loader", PARSERS)
@FUZZ
@given(tree=TREES, flow=st.sampled_from([None, True, False]), edits=EDITS)
def test_random_trees_dumped_and_mutated(loader, tree, flow, edits):
    text = yaml.dump({"lab": "demo", "x-tree": tree}, default_flow_style=flow, allow_unicode=True).encode()
    with parser(loader), lab_files(mutate(text, edits)) as path:
        returns_or_source_error(path, validate=True)


def finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(finite(v) for v in value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    return True


@pytest.mark.parametrize("loader", PARSERS)
@FUZZ
@given(tree=st.dictionaries(st.text(max_size=10), TREES, max_size=6))
def test_json_is_read_back_as_itself(loader, tree):
    """JSON is YAML 1.2: the core schema reads it back exactly (no `yes`, `010` or `<<` surprises)."""
    assume(finite(tree))
    # Astral characters raw (JSON's surrogate-pair escapes are not YAML), the characters a lab
    # file may not hold raw escaped as \uXXXX (they can only be inside JSON strings).
    text = re.sub("[\x7f-\x9f\u2028\u2029\ufffe\uffff]", lambda m: f"\\u{ord(m.group()):04x}",
                  json.dumps(tree, ensure_ascii=False))
    with parser(loader), lab_files(text.encode()) as path:
        assert read_yaml(path).data == tree


# --- The repository's lab, mutated -----------------------------------------------------------------------

@pytest.mark.parametrize("loader", PARSERS)
@FUZZ
@given(lab_edits=EDITS, override_edits=EDITS, with_override=st.booleans())
def test_the_repository_lab_mutated(loader, lab_edits, override_edits, with_override):
    lab = mutate(LAB_TEXT.encode(), lab_edits)
    override = mutate(OVERRIDE_TEXT.encode(), override_edits) if with_override else None
    with parser(loader), lab_files(lab, override) as path:
        returns_or_source_error(path, validate=True)
