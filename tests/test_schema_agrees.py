"""schemas/lab.schema.json and `reconcile validate` agree: on the repository's labs, the examples,
every YAML block of docs/lab-yaml.md, and the hostile corpus of test_hostile_spec.py.

The schema is checked (Draft 2020-12) on the data the loader returns, as JSON: numbers are
numbers whatever class the loader gives them, mapping keys are strings. The only disagreements
allowed are the ones listed in SCHEMA_CANNOT, with the reason a JSON Schema cannot say it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from test_hostile_spec import CASES, lab_folder, validate

from reconciler.source import load_document
from reconciler.spec import json_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "lab.schema.json").read_text())

ON_DISK = "a file on disk: the schema sees the path, not the file"
ARITHMETIC = "arithmetic on numbers inside one string (a range, a prefix), not a pattern"
CROSS = "a cross-reference between two places in the file"
SCHEMA_CANNOT = {
    "source-symlink-out": ON_DISK, "source-symlink-loop": ON_DISK, "source-missing": ON_DISK,
    "source-directory": ON_DISK, "source-fifo": ON_DISK, "source-too-big": ON_DISK,
    "path-long-component": "JSON Schema counts characters; the kernel's 255 counts bytes (100 x '€' is 300)",
    "proxy-huge-range": ARITHMETIC, "proxy-backwards-range": ARITHMETIC,
    "proxy-port-count": "how many ports connect names against how many listen names: " + ARITHMETIC,
    "bridge-network-address": ARITHMETIC, "bridge-loopback": ARITHMETIC, "bridge-ipv6-link-local": ARITHMETIC,
    "bridge-overlap": CROSS + " (two networks' subnets)",
    "existing-profile": CROSS, "existing-default": CROSS + " (with a default value)", "existing-network": CROSS,
}


def as_json(data):
    """What an editor's JSON Schema validator sees: plain JSON (int subclasses are numbers)."""
    return json.loads(json.dumps(data, default=str))


def schema_errors(data) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in Draft202012Validator(SCHEMA).iter_errors(as_json(data))]


def validate_errors(path: Path) -> list[str]:
    """The problem lines of `reconcile validate -f PATH` ([] when it says valid)."""
    code, _, err = validate(path)
    assert code in (0, 1) and (code == 1) == bool(err), err
    return err.splitlines()


def doc_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "lab-yaml.md").read_text(), re.DOTALL)


def test_the_schema_is_a_valid_draft_2020_12_schema_and_the_one_generated():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA == json_schema()


@pytest.mark.parametrize("name", ["lab.yaml", *sorted(p.name for p in (ROOT / "examples").glob("*.yaml"))])
def test_repository_labs_and_examples_pass_both(tmp_path, name):
    source = ROOT / name if name == "lab.yaml" else ROOT / "examples" / name
    path = source
    if ".override" in name:  # an override only means something merged into the lab beside it
        shutil.copy(ROOT / "lab.yaml", tmp_path / "lab.yaml")
        shutil.copy(source, tmp_path / "lab.override.yaml")
        path = tmp_path / "lab.yaml"
    assert validate_errors(path) == []
    assert schema_errors(load_document(path, {}).data) == []


@pytest.mark.parametrize("index", range(len(doc_blocks())))
def test_every_yaml_block_of_the_reference_passes_both(tmp_path, index):
    path = tmp_path / "lab.yaml"
    path.write_text(doc_blocks()[index])
    data = load_document(path, {}).data
    for spec in data.get("containers", {}).values():  # the files its `source:` keys name, beside it
        for file in spec.get("files", {}).values():
            if "source" in file:
                (tmp_path / file["source"]).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / file["source"]).write_text("example\n")
    assert validate_errors(path) == []
    assert schema_errors(data) == []


def test_the_reference_has_yaml_blocks():
    assert doc_blocks()


@pytest.mark.parametrize("case_id, klass, text, fragment", CASES, ids=[c[0] for c in CASES])
def test_the_schema_refuses_what_validate_refuses(tmp_path, case_id, klass, text, fragment):
    path = lab_folder(tmp_path) / "lab.yaml"
    path.write_text(text)
    assert validate_errors(path)
    refused = schema_errors(load_document(path, {}).data)
    if case_id in SCHEMA_CANNOT:
        assert refused == [], f"the schema now refuses {case_id}: take it off SCHEMA_CANNOT"
    else:
        assert refused, f"{case_id}: the schema accepts what validate refuses"


def test_schema_cannot_lists_only_corpus_cases():
    assert set(SCHEMA_CANNOT) <= {case[0] for case in CASES}
