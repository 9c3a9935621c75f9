"""Good input keeps working through the bounded loader: the repository's labs, merge keys where
explicit keys win, YAML 1.2 readings with numbers as written, aliases by reference, the limits
themselves.  In-process.  No LXD."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import yaml

from reconciler import source
from reconciler.source import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_NODES,
    Document,
    Location,
    Problem,
    SourceError,
    YamlFloat,
    YamlInt,
    field_path,
    load_document,
    merge,
    read_yaml,
)
from reconciler.spec import load_lab, lxd_string

ROOT = Path(__file__).resolve().parent.parent

PARSERS = [pytest.param(yaml.SafeLoader, id="python-parser")]
if getattr(yaml, "__with_libyaml__", False):
    PARSERS.insert(0, pytest.param(yaml.CSafeLoader, id="c-parser"))


@pytest.fixture(params=PARSERS)
def each_parser(request, monkeypatch):
    monkeypatch.setattr(source, "PARSER", request.param)
    return request.param


def write(tmp_path: Path, text: str | bytes, override: str | None = None) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_bytes(text if isinstance(text, bytes) else textwrap.dedent(text).encode())
    if override is not None:
        (tmp_path / "lab.override.yaml").write_text(textwrap.dedent(override))
    return path


def problems(path: Path, validate: bool = True) -> list[str]:
    with pytest.raises(SourceError) as caught:
        load_lab(path, {}) if validate else load_document(path, {})
    return [str(p) for p in caught.value.problems]


def test_the_c_parser_is_used_when_pyyaml_has_it():
    assert source.PARSER is (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)


# Each lab the repository ships: its name, containers (with what anchors and merge keys gave them),
# networks, and the hosts its HAProxy routes.
SHIPPED_LABS = {
    "lab.yaml": ("haproxy-lab", {"web1": ("reconciler-debian", ["default", "macvlan"], ["apache2"], "SITE1"),
                                 "web2": ("reconciler-debian", ["default", "macvlan"], ["apache2"], "SITE2"),
                                 "proxyha": ("reconciler-debian", ["default", "macvlan"], [], None)},
                 ["lan0"], ["site1.testdomain.com", "site2.testdomain.com"]),
    "examples/cluster.yaml": ("guide-cluster", {"web1": ("reconciler-debian", ["default"], ["apache2"], "SITE1"),
                                                "web2": ("reconciler-debian", ["default"], ["apache2"], "SITE2"),
                                                "proxyha": ("reconciler-debian", ["default"], [], None)},
                              [], ["site1.testdomain.com", "site2.testdomain.com"]),
    "examples/rocky.yaml": ("rocky-guide", {
        "web1": ("images:rockylinux/8", ["default", "macvlan"], ["httpd", "cronie", "dhcp-client"], "SITE1"),
        "web2": ("images:rockylinux/8", ["default", "macvlan"], ["httpd", "cronie", "dhcp-client"], "SITE2"),
        "proxyha": ("images:rockylinux/8", ["default", "macvlan"], ["cronie", "dhcp-client"], None)},
        [], ["site1.testdomain.com", "site2.testdomain.com"]),
    "examples/tls-routes.yaml": ("tls-routes", {"app1": ("reconciler-debian", ["default", "lan"], ["apache2"], "SITE1"),
                                                "app2": ("reconciler-debian", ["default", "lan"], ["apache2"], "SITE2"),
                                                "api1": ("reconciler-debian", ["default", "lan"], ["apache2"], "SITEAPI"),
                                                "edge": ("reconciler-debian", ["default", "lan"], [], None)},
                                 ["tlsbr0"], ["www.example.test"] * 4),
}


def test_the_repository_labs_load_with_either_parser_as_written(each_parser):
    assert set(SHIPPED_LABS) == {"lab.yaml"} | {f"examples/{p.name}" for p in (ROOT / "examples").glob("*.yaml")
                                               if ".override" not in p.name}
    for name, (lab_name, containers, networks, hosts) in SHIPPED_LABS.items():
        lab, _ = load_lab(ROOT / name, {})
        assert lab.lab == lab_name and list(lab.networks) == networks, name
        assert {c: (spec.image, spec.profiles, spec.packages, spec.vars.get("marker"))
                for c, spec in lab.containers.items()} == containers, name
        assert [r.host for spec in lab.haproxy.values() for f in spec.frontends.values() for r in f.routes] == hosts
    guide, _ = load_lab(ROOT / "lab.yaml", {})
    assert set(guide.containers["web1"].files) == {"/etc/network/interfaces", "/var/www/html/index.html",
                                                   "/etc/apache2/conf-enabled/client-ip.conf"}
    assert guide.networks["lan0"].config["ipv4.nat"] == "false"  # YAML's false, in LXD's form
    assert guide.containers["proxyha"].services["apache2"].enabled is False
    # The guide's defect fixed in the lab itself: the client's address survives the proxy device.
    assert guide.haproxy["proxyha"].frontends["http_frontend"].accept_proxy
    assert guide.containers["proxyha"].devices["http"]["proxy_protocol"] == "true"


# What each example override adds, merged onto the guide's lab (as validate --base lab.yaml does).
OVERRIDES = {
    "access-rules.override.yaml": lambda lab: [r.deny_status for r in lab.haproxy["proxyha"].frontends[
        "http_frontend"].access] == [403, 401] and "api" in lab.haproxy["proxyha"].backends,
    "pools.override.yaml": lambda lab: lab.haproxy["proxyha"].stats.port == 8404
    and [s.weight for s in lab.haproxy["proxyha"].backends["subdomain1"].servers] == [3, 1],
    "network-acls.override.yaml": lambda lab: lab.networks["lan0"].config["security.acls"] == "lan-web"
    and [r.destination_port for r in lab.acls["lan-web"].ingress] == [["80"], None],
    "shared-site.override.yaml": lambda lab: lab.volumes["shared"].pool == "labdata" and all(
        lab.containers[c].devices["shared"] == {"type": "disk", "pool": "labdata", "source": "shared",
                                                "path": "/var/www/html/shared"} for c in ("web1", "web2")),
    "forward.override.yaml": lambda lab: lab.forwards["10.203.7.250"].network == "lan0"
    and [p.target for p in lab.forwards["10.203.7.250"].ports] == ["proxyha"]
    and lab.containers["proxyha"].devices["eth0"]["ipv4.address"] == "10.203.7.5"
    and "http" in lab.containers["proxyha"].devices,  # beside the proxy devices, not instead
    "lab.override.example.yaml": lambda lab: lab.networks == {}
    and lab.profiles["macvlan"].devices["eth0"]["parent"] == "eno1",
}


def test_the_example_overrides_load_onto_the_guide_s_lab_with_either_parser(each_parser):
    assert set(OVERRIDES) == {p.name for p in (ROOT / "examples").glob("*.yaml") if ".override" in p.name}
    for name, added in OVERRIDES.items():
        lab, _ = load_lab(ROOT / "lab.yaml", {}, override=ROOT / "examples" / name)
        assert added(lab), name


def test_every_example_lab_serialises_for_a_saved_plan_and_a_checkpoint(recwarn):
    """The lab as validated goes into a saved plan's digest and a checkpoint's record: a condition under
    `not:`/`all:` once failed to serialise (its tag was read off the model as if it were lab.yaml's data)."""
    from reconciler.planfile import lab_model
    for name in OVERRIDES:
        lab, _ = load_lab(ROOT / "lab.yaml", {}, override=ROOT / "examples" / name)
        assert lab_model(lab)["lab"] == lab.lab, name
    assert not [w for w in recwarn if "serializ" in str(w.message)]


# --- Merge keys --------------------------------------------------------------------------------------

MERGED = """\
lab: demo
x-c: &c
  image: base-image
  description: from the anchor
x-d: &d
  image: other-image
  state: stopped
profiles:
  p:
    devices: {root: {type: disk, path: /, pool: default}}
containers:
  after:
    <<: *c
    image: explicit-after
    profiles: [p]
  before:
    image: explicit-before
    <<: *c
    profiles: [p]
  listed:
    <<: [*c, *d]
    profiles: [p]
"""


def test_an_explicit_key_overrides_a_merged_one_wherever_it_is_written(tmp_path, each_parser):
    lab, doc = load_lab(write(tmp_path, MERGED), {})
    assert lab.containers["after"].image == "explicit-after"
    assert lab.containers["before"].image == "explicit-before"
    assert lab.containers["after"].description == "from the anchor"
    # The places are those of the winning values: the explicit one, or the anchor's.
    assert doc.locate(("containers", "after", "image")).line == 14
    assert doc.locate(("containers", "after", "description")).line == 4
    assert doc.keys[("containers", "before", "image")].line == 17


def test_in_a_merge_list_the_first_mapping_wins(tmp_path, each_parser):
    lab, doc = load_lab(write(tmp_path, MERGED), {})
    listed = lab.containers["listed"]
    assert (listed.image, listed.description, listed.state) == ("base-image", "from the anchor", "stopped")
    assert doc.locate(("containers", "listed", "image")).line == 3
    assert doc.locate(("containers", "listed", "state")).line == 7


def test_an_error_in_an_overriding_value_is_reported_at_it(tmp_path):
    text = MERGED.replace("image: explicit-after", "image: 'nope:x'")
    assert any(":14:12: containers.after.image: unknown image remote 'nope'" in p for p in problems(write(tmp_path, text)))


def test_two_explicit_equal_keys_are_still_a_duplicate(tmp_path):
    text = MERGED.replace("    image: explicit-after\n", "    image: explicit-after\n    image: again\n")
    assert any("containers.after.image: duplicate key (first defined at line 14)" in p
               for p in problems(write(tmp_path, text)))


# --- YAML 1.2 readings, numbers as written -----------------------------------------------------------------

def test_config_values_reach_lxd_as_written(tmp_path, each_parser):
    text = """\
    lab: demo
    profiles:
      p:
        devices: {root: {type: disk, path: /, pool: default}}
        config:
          user.octal: 010
          user.version: 1.10
          user.time: 12:30
          user.word: yes
          user.switch: on
          user.hex: 0x1F
          user.o: 0o17
          user.exp: 1e3
          user.plus: +12
          user.bool: true
          user.Bool: False
          user.date: 2001-01-01
          user.quoted: "010"
    """
    lab, _ = load_lab(write(tmp_path, text), {})
    assert lab.profiles["p"].config == {
        "user.octal": "010", "user.version": "1.10", "user.time": "12:30", "user.word": "yes", "user.switch": "on",
        "user.hex": "0x1F", "user.o": "0o17", "user.exp": "1e3", "user.plus": "+12", "user.bool": "true",
        "user.Bool": "false", "user.date": "2001-01-01", "user.quoted": "010"}


def test_scalars_by_the_core_schema(tmp_path, each_parser):
    text = ("a: 010\nb: 1.10\nc: 12:30\nd: yes\ne: ~\nf: null\ng: NULL\nh:\ni: True\nj: .inf\nk: -.Inf\nl: .nan\n"
            "m: 0o17\nn: 0x1F\no: '1'\np: !!str 1\nq: !!float 1\nr: !!int '7'\ns: ! 5\nt: 1_000\nu: 0b11\n")
    data = read_yaml(write(tmp_path, text)).data
    assert isinstance(data["a"], YamlInt) and data["a"] == 10 and data["a"].text == "010"
    assert isinstance(data["b"], YamlFloat) and data["b"] == 1.1 and data["b"].text == "1.10"
    assert data["c"] == "12:30" and data["d"] == "yes" and data["t"] == "1_000" and data["u"] == "0b11"
    assert data["e"] is data["f"] is data["g"] is data["h"] is None
    assert data["i"] is True and data["j"] == float("inf") and data["k"] == float("-inf") and data["l"] != data["l"]
    assert (data["m"], data["n"]) == (15, 31)
    assert data["o"] == "1" and data["p"] == "1" and data["s"] == "5"
    assert isinstance(data["q"], float) and data["q"] == 1.0 and data["r"] == 7


def test_keys_are_strings_as_written(tmp_path, each_parser):
    data = read_yaml(write(tmp_path, "yes: 1\non: 2\n80: 3\nnull: 4\n~: 5\n1.10: 6\n'x': 7\n")).data
    assert list(data) == ["yes", "on", "80", "null", "~", "1.10", "x"]


def test_numbers_as_written_survive_copying_and_pickling():
    import copy
    import pickle
    number = YamlInt(8, "010")
    assert copy.deepcopy(number).text == "010" and pickle.loads(pickle.dumps(number)).text == "010"
    real = YamlFloat(1.1, "1.10")
    assert copy.deepcopy(real).text == "1.10" and pickle.loads(pickle.dumps(real)).text == "1.10"
    assert lxd_string(number) == "010" and lxd_string(8) == "8" and lxd_string(real) == "1.10"


def test_a_quoted_mode_is_fine_and_a_number_gets_the_hint(tmp_path):
    text = ("lab: demo\ncontainers:\n  a:\n    image: x\n    profiles: [p]\n    files:\n"
            "      /etc/a: {content: x, mode: MODE}\nprofiles:\n  p:\n"
            "    devices: {root: {type: disk, path: /, pool: default}}\n")
    lab, _ = load_lab(write(tmp_path, text.replace("MODE", '"0640"')), {})
    assert lab.containers["a"].files["/etc/a"].mode == "0640"
    assert any('mode must be a string: quote it: mode: "0640"' in p
               for p in problems(write(tmp_path, text.replace("MODE", "0640"))))


# --- Aliases, limits -------------------------------------------------------------------------------------

def test_an_alias_is_its_anchor_s_object_never_a_copy(tmp_path, each_parser):
    doc = read_yaml(write(tmp_path, "a: &a {b: [1, 2]}\nc: *a\nd: [*a, *a]\n"))
    assert doc.data["c"] is doc.data["a"] and doc.data["d"][0] is doc.data["a"] and doc.data["d"][1] is doc.data["a"]
    assert doc.locate(("d", 1, "b", 0)) == doc.locate(("a", "b", 0))  # written once, at the anchor


def test_reuse_under_the_budget_loads(tmp_path, each_parser):
    text = "lab: demo\nx-a: &a [" + ", ".join(["x"] * 99) + "]\nx-b: [" + ", ".join(["*a"] * 1000) + "]\n"
    assert len(load_document(write(tmp_path, text), {}).data["x-b"]) == 1000  # 100 000 values


@pytest.mark.parametrize("budget", [1000, MAX_NODES])
def test_the_node_budget_is_exact(tmp_path, each_parser, monkeypatch, budget):
    """The real budget is tried with each parser too: the pure-Python one only takes longer."""
    monkeypatch.setattr(source, "MAX_NODES", budget)
    # the top-level mapping, `lab`, `demo`, `x-a`, its sequence: 5 values before the items
    items = budget - 5
    path = write(tmp_path, "lab: demo\nx-a:\n" + "- x\n" * items)
    assert len(load_document(path, {}).data["x-a"]) == items
    path.write_text("lab: demo\nx-a:\n" + "- x\n" * (items + 1))
    assert any(f"more than {budget} values" in p for p in problems(path, validate=False))


def test_nesting_up_to_the_limit_loads(tmp_path, each_parser):
    depth = MAX_DEPTH - 1  # below the top-level mapping
    doc = load_document(write(tmp_path, "lab: demo\nx-a: " + "[" * depth + "]" * depth + "\n"), {})
    value = doc.data["x-a"]
    for _ in range(depth - 1):
        value = value[0]
    assert value == []


def test_a_file_at_the_cap_loads(tmp_path, each_parser):
    head, tail = 'lab: demo\nx-pad: "', '"\n'
    path = write(tmp_path, head + "p" * (MAX_BYTES - len(head) - len(tail)) + tail)
    assert path.stat().st_size == MAX_BYTES
    assert len(load_document(path, {}).data["x-pad"]) > MAX_BYTES - 100


def test_a_bom_crlf_and_tabs_in_values_are_fine(tmp_path, each_parser):
    doc = read_yaml(write(tmp_path, b"\xef\xbb\xbflab: demo\r\nx-a: 1\r\nx-b: \"c\td\"\r\n"))
    assert doc.data == {"lab": "demo", "x-a": 1, "x-b": "c\td"}
    assert doc.locate(("x-b",)) == Location(str(tmp_path / "lab.yaml"), 3, 6)


def test_escapes_in_double_quotes_write_what_may_not_be_raw(tmp_path, each_parser):
    data = read_yaml(write(tmp_path, 'a: "\\0 \\x07 \\e \\N \\L \\P \\u00e9"\n')).data
    assert data["a"] == "\x00 \x07 \x1b \x85 \u2028 \u2029 é"


def test_an_empty_file_is_an_empty_mapping(tmp_path, each_parser):
    assert load_document(write(tmp_path, "# nothing yet\n"), {}).data == {}


# --- Both files, printing ---------------------------------------------------------------------------------

def test_problems_of_both_files_are_reported_together(tmp_path, each_parser):
    found = problems(write(tmp_path, "lab: [demo\n", override="x-a: !foo 1\nx-a: 2\n"), validate=False)
    assert [p.split(": ", 2)[1:] for p in found] == [
        ["x-a", ("unsupported tag !foo (only YAML's core tags are read: !!str !!int !!float !!bool !!null"
                 " !!map !!seq)")],
        ["x-a", "duplicate key (first defined at line 1)"],
        ["(top level)", "invalid YAML: " + found[2].split("invalid YAML: ")[1]],
    ]
    assert found[0].startswith(str(tmp_path / "lab.override.yaml")) and found[2].startswith(str(tmp_path / "lab.yaml"))


def test_a_problem_prints_as_one_line_whatever_the_key_holds():
    problem = Problem(Location("f", 1, 2), ("containers", "a\nb", "x.y", 'q"'), "bad \x1b[2J value\n")
    assert str(problem) == 'f:1:2: containers["a\\nb"]["x.y"]["q\\""]: bad \\x1b[2J value\\n'
    assert field_path(("containers", "web1", "config", "limits.cpu", 0)) == 'containers.web1.config["limits.cpu"][0]'
    assert field_path(("containers", "web1", "files", "/var/www/html/index.html", "template")) == \
        'containers.web1.files["/var/www/html/index.html"].template'  # the one form of docs/cli.md
    assert field_path(("containers", "c", "services", "getty@tty1", "after", 0)) == 'containers.c.services["getty@tty1"].after[0]'


def test_the_message_lists_at_most_1000_problems_then_their_count():
    many = [Problem(Location("f", line, 1), (), "bad") for line in range(1, 1501)]
    lines = str(SourceError(many)).splitlines()
    assert len(lines) == 1001 and lines[-1] == "f:1001:1: (top level): 500 more problems from here on are not shown"


def test_merging_a_large_override_is_linear():
    size = 40_000
    base = Document({f"k{i}": {"v": i} for i in range(size)},
                    {(f"k{i}",): Location("a", i + 1, 1) for i in range(size)}, {}, ["a"])
    over = Document({f"n{i}": {"v": i} for i in range(size)},
                    {(f"n{i}",): Location("b", i + 1, 1) for i in range(size)}, {}, ["b"])
    start = time.process_time()  # CPU time: the machine's load does not count
    merged = merge(base, over)
    assert time.process_time() - start < 2  # it rescanned every place per new key: minutes
    assert len(merged.data) == 2 * size and merged.locate(("n7",)) == Location("b", 8, 1)


def test_too_deep_stops_reading_at_once_with_either_parser(tmp_path, each_parser):
    # The Python parser's scanner does work for every open flow level on every token: reading on
    # through 20 000 levels took 33 s.  The depth problem stops the reading.
    path = write(tmp_path, "lab: demo\nx-a: " + "[" * 20_000 + "]" * 20_000 + "\n")
    start = time.process_time()  # CPU time: the machine's load does not count
    found = problems(path, validate=False)
    assert time.process_time() - start < 3
    # libyaml may see its own limit (1000 levels) first, scanning ahead
    assert len(found) == 1 and ("nested more than" in found[0] or "exceeded maximum nesting depth" in found[0])


def test_interpolation_problems_join_those_of_a_bad_override(tmp_path, each_parser):
    found = problems(write(tmp_path, "lab: ${RECONCILER_TEST_UNSET}\n", override="x-a: [\n"), validate=False)
    assert len(found) == 2
    assert found[0].startswith(str(tmp_path / "lab.override.yaml")) and "invalid YAML" in found[0]
    assert found[1].startswith(f"{tmp_path / 'lab.yaml'}:1:6: lab: environment variable RECONCILER_TEST_UNSET")
