"""schemas/lab.schema.json and `reconcile validate` agree: on the repository's labs, the examples,
every YAML block of docs/lab-yaml.md, and the hostile corpus of test_hostile_spec.py.

The schema is checked (Draft 2020-12) on the data the loader returns, as JSON: numbers are
numbers whatever class the loader gives them, mapping keys are strings. The only disagreements
allowed are the ones listed in SCHEMA_CANNOT, with the reason a JSON Schema cannot say it.

An editor sees the files as written: the raw files (no interpolation, no merge) pass the schema they
name on their first line, `${VAR}` placeholders and all.  An override is a partial lab: raw, it passes
schemas/lab.override.schema.json (nothing required, `key: null` allowed), and merged raw onto the
lab.yaml beside it, the lab's schema.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from test_hostile_spec import CASES, lab_folder, validate

from reconciler.source import load_document, merge, read_yaml
from reconciler.spec import Lab, json_schema, override_json_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "lab.schema.json").read_text())
OVERRIDE_SCHEMA = json.loads((ROOT / "schemas" / "lab.override.schema.json").read_text())

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
    "bridge-dhcp-backwards": ARITHMETIC, "bridge-dhcp-outside": CROSS + " (a range against the bridge's address)",
    "existing-profile": CROSS, "existing-default": CROSS + " (with a default value)", "existing-network": CROSS,
}


def as_json(data):
    """What an editor's JSON Schema validator sees: plain JSON (int subclasses are numbers)."""
    return json.loads(json.dumps(data, default=str))


def schema_errors(data, schema: dict = SCHEMA) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in Draft202012Validator(schema).iter_errors(as_json(data))]


def validate_errors(path: Path) -> list[str]:
    """The problem lines of `reconcile validate -f PATH` ([] when it says valid)."""
    code, _, err = validate(path)
    assert code in (0, 1) and (code == 1) == bool(err), err
    return err.splitlines()


def doc_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "lab-yaml.md").read_text(), re.DOTALL)


def test_the_schema_is_a_valid_draft_2020_12_schema_and_the_one_generated():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA == json_schema(), "run `make schema`"
    Draft202012Validator.check_schema(OVERRIDE_SCHEMA)
    assert OVERRIDE_SCHEMA == override_json_schema(), "run `make schema`"


# --- what an editor sees: the files as written --------------------------------------------------------

REPOSITORY_LABS = [ROOT / "lab.yaml", *sorted((ROOT / "examples").glob("*.yaml"))]
SCHEMA_LINE = re.compile(r"# yaml-language-server: \$schema=(\S+)\n")


def is_override(path: Path) -> bool:
    return ".override" in path.name


@pytest.mark.parametrize("path", REPOSITORY_LABS, ids=lambda p: p.name)
def test_each_file_names_its_schema_on_its_first_line(path):
    first = SCHEMA_LINE.match(path.read_text())
    assert first, f"{path.name}: its first line is not `# yaml-language-server: $schema=...`"
    named = (path.parent / first[1]).resolve()
    wanted = "lab.override.schema.json" if is_override(path) else "lab.schema.json"
    assert named == ROOT / "schemas" / wanted


@pytest.mark.parametrize("path", REPOSITORY_LABS, ids=lambda p: p.name)
def test_each_file_as_written_passes_the_schema_it_names(path):
    raw = read_yaml(path)
    if not is_override(path):
        assert schema_errors(raw.data) == []
        return
    assert schema_errors(raw.data, OVERRIDE_SCHEMA) == []
    assert schema_errors(merge(read_yaml(ROOT / "lab.yaml"), raw).data) == []  # as lab.yaml beside it takes it


def lab_blocks() -> list[tuple[str, str]]:
    """(where, text) of every ```yaml block of docs/*.md and README.md that is a lab or an override."""
    out = []
    for page in sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]):
        for i, text in enumerate(re.findall(r"```yaml\n(.*?)```", page.read_text(), re.DOTALL)):
            out.append((f"{page.name}#{i}", text))
    return [(where, text) for where, text in out if _kind(text)]


def _kind(text: str) -> str:
    """"lab" (it has `lab:`), "override" (only a lab's top-level keys), or "" (another tool's YAML)."""
    keys = {str(k) for k in yaml.safe_load(text) or {}}
    if "lab" in keys:
        return "lab"
    known = {f.alias or name for name, f in Lab.model_fields.items()}
    return "override" if keys and all(k in known or k.startswith("x-") for k in keys) else ""


def test_the_docs_blocks_are_found_and_sorted():
    kinds = {where: _kind(text) for where, text in lab_blocks()}
    assert kinds["lab-yaml.md#0"] == "lab" and kinds["scale.md#0"] == "override", kinds
    assert not any(where.startswith("cli.md") for where in kinds)  # pre-commit's configuration, not a lab


@pytest.mark.parametrize("where, text", lab_blocks(), ids=[w for w, _ in lab_blocks()])
def test_each_docs_block_as_written_passes_the_schema(tmp_path, where, text):
    path = tmp_path / "block.yaml"
    path.write_text(text)
    assert schema_errors(read_yaml(path).data, SCHEMA if _kind(text) == "lab" else OVERRIDE_SCHEMA) == []


PLACED = """\
lab: ${LAB:-placed}
lxd: {project: "${PROJECT}", insecure_skip_verify: false}
networks:
  br0: {config: {ipv4.address: "${NET:-10.203.9.1/24}", ipv4.nat: "${NAT:-false}"}}
containers:
  web1:
    image: ${IMAGE:-reconciler-debian}
    state: ${STATE:-running}
    devices:
      http: {type: proxy, listen: "tcp:127.0.0.1:${PORT:-80}", connect: "tcp:127.0.0.1:80", proxy_protocol: "${PP:-true}"}
haproxy:
  web1:
    frontends:
      f: {bind: "*:${PORT:-80}", accept_proxy: "${ACCEPT:-loopback}", default_backend: b}
    backends:
      b: {balance: "${BALANCE:-roundrobin}", servers: [{container: web1, port: "${WEB_PORT:-80}"}]}
"""


def test_a_placeholder_is_taken_where_a_literal_is_wanted_and_only_a_placeholder(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(PLACED)
    assert schema_errors(read_yaml(path).data) == []
    for literal in ("$${PORT:-80}", "${PORT", "$PORT", "${1PORT}"):  # not placeholders: refused as before
        path.write_text(PLACED.replace('"*:${PORT:-80}"', f'"*:{literal}"'))
        assert [e.split(":")[0] for e in schema_errors(read_yaml(path).data)] == ["haproxy.web1.frontends.f.bind"]


def test_an_override_may_leave_out_what_its_base_has_and_remove_keys_with_null(tmp_path):
    path = tmp_path / "lab.override.yaml"
    path.write_text("containers:\n  web1: {devices: {http: {proxy_protocol: true}}, files: {/x: {mode: '0600'}}}\n"
                    "networks: {lan0: null}\n")
    assert schema_errors(read_yaml(path).data) != []  # the lab's schema wants `lab` and an image
    assert schema_errors(read_yaml(path).data, OVERRIDE_SCHEMA) == []
    path.write_text("containers: {web1: {bogus: 1, devices: {http: {type: proxy, proxy_protocl: true}}}}\n")
    assert sorted(e.split(":")[0] for e in schema_errors(read_yaml(path).data, OVERRIDE_SCHEMA)) == [
        "containers.web1", "containers.web1.devices.http"]  # unknown keys: still refused


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
