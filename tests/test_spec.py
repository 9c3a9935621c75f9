"""lab.yaml loading: every error at once as FILE:LINE:COL: path: message.  No LXD."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.source import SourceError
from reconciler.spec import json_schema, load_lab

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
lab: demo
networks:
  labbr0:
    config: {ipv4.address: 10.203.7.1/24, ipv4.nat: false, ipv6.address: none}
profiles:
  base:
    devices:
      root: {type: disk, path: /, pool: default}
      eth0: {type: nic, network: labbr0, name: eth0}
containers:
  web1:
    image: reconciler-tiny
    profiles: [base]
    config: {limits.cpu: 1, security.nesting: true}
    devices:
      http: {type: proxy, listen: "tcp:127.0.0.1:8080", connect: "tcp:127.0.0.1:80"}
"""


def load(tmp_path: Path, text: str, env: dict | None = None, override: str | None = None):
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(text))
    if override is not None:
        (tmp_path / "lab.override.yaml").write_text(textwrap.dedent(override))
    return load_lab(path, env or {})


def errors(tmp_path: Path, text: str, **kw) -> list[str]:
    with pytest.raises(SourceError) as caught:
        load(tmp_path, text, **kw)
    return [str(p) for p in caught.value.problems]


def test_a_good_lab_loads_with_values_in_lxd_string_form(tmp_path):
    lab, _ = load(tmp_path, GOOD)
    assert lab.containers["web1"].config == {"limits.cpu": "1", "security.nesting": "true"}
    assert lab.networks["labbr0"].config["ipv4.nat"] == "false"


@pytest.mark.parametrize("text, expected", [
    ("lab: demo\ncontainers:\n  web1:\n    image: x\n    imgae: y\n",
     "lab.yaml:5:5: containers.web1.imgae: unknown field"),
    ("lab: demo\ncontainers:\n  web1:\n    image: x\n  web1:\n    image: y\n",
     "lab.yaml:5:3: containers.web1: duplicate key (first defined at line 3)"),
    ("lab: demo\ncontainers:\n  9web:\n    image: x\n",
     "lab.yaml:3:3: containers.9web: '9web' is not a valid container name"),
    ("lab: demo\ncontainers:\n  web1:\n    image: x\n    profiles: [default, nope]\n",
     "lab.yaml:5:25: containers.web1.profiles[1]: unknown profile 'nope'"),
    ("lab: demo\ncontainers:\n  web1:\n    image: x\n    state: paused\n",
     "lab.yaml:5:12: containers.web1.state: Input should be 'running' or 'stopped'"),
    ("lab: demo\ncontainers:\n  web1:\n    image: x\n    config: {volatile.eth0.hwaddr: x}\n",
     "lab.yaml:5:14: containers.web1.config[\"volatile.eth0.hwaddr\"]: volatile.*, image.*"),
    ("lab: demo\nprofiles:\n  p:\n    devices: {eth0: {type: nic, network: lxdbr1}}\n",
     "lab.yaml:4:42: profiles.p.devices.eth0.network: unknown network 'lxdbr1'"),
    ("lab: demo\ncontainers:\n  web1:\n    image: x\n    devices: {d: {path: /}}\n",
     "lab.yaml:5:15: containers.web1.devices.d: a device needs a `type`"),
    ("lab: demo\ncontainers: [1, 2\n", "lab.yaml:3:1: (top level): invalid YAML"),
    ("lab: Demo Lab\n", "lab.yaml:1:6: lab: lowercase letters"),
    # An empty value is placed where libyaml (the C parser, used when installed) puts it: at the `}`.
    ("lab: demo\ncontainers:\n  a:\n    image: x\n    config: {limits.cpu: }\n",
     'lab.yaml:5:26: containers.a.config["limits.cpu"]: needs a value'),
    ("lab: demo\ncontainers:\n  a: {image: 'imagse:debian/12'}\n",
     "lab.yaml:3:14: containers.a.image: unknown image remote 'imagse'"),
])
def test_each_error_names_file_line_column_and_field(tmp_path, text, expected):
    found = errors(tmp_path, text)
    assert any(e.endswith(expected) or expected in e for e in found), found
    assert all(e.startswith(str(tmp_path / "lab.yaml")) for e in found)


def test_every_error_is_reported_at_once(tmp_path):
    text = "lab: demo\ncontainers:\n  a:\n    image: x\n    bogus: 1\n  b:\n    image: x\n    state: up\n"
    found = errors(tmp_path, text)
    assert len(found) == 2 and ":5:" in found[0] and ":8:" in found[1]


def test_two_proxies_on_one_listen_address_across_containers(tmp_path):
    text = """\
    lab: demo
    containers:
      a:
        image: x
        devices: {http: {type: proxy, listen: "tcp:127.0.0.1:80", connect: "tcp:127.0.0.1:80"}}
      b:
        image: x
        devices: {web: {type: proxy, listen: "tcp:127.0.0.1:80", connect: "tcp:127.0.0.1:80"}}
    """
    found = errors(tmp_path, text)
    assert any("containers.b.devices.web.listen" in e and "clashes with the listen address of containers.a" in e
               for e in found), found


@pytest.mark.parametrize("first, second, clash", [
    ("tcp:0.0.0.0:80", "tcp:127.0.0.1:80", True),
    ("tcp:127.0.0.1:80", "tcp:0.0.0.0:80", True),
    ("tcp:127.0.0.1:80", "tcp:127.0.0.2:80", False),
    ("tcp:127.0.0.1:80-90", "tcp:127.0.0.1:85", True),
    ("tcp:127.0.0.1:80", "udp:127.0.0.1:80", False),
])
def test_listen_clashes_know_wildcards_and_ranges(tmp_path, first, second, clash):
    text = f"""\
    lab: demo
    containers:
      a: {{image: x, devices: {{p: {{type: proxy, listen: "{first}", connect: "tcp:127.0.0.1:80"}}}}}}
      b: {{image: x, devices: {{p: {{type: proxy, listen: "{second}", connect: "tcp:127.0.0.1:80"}}}}}}
    """
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(text))
    try:
        load_lab(path, {})
        found = []
    except SourceError as err:
        found = [str(p) for p in err.problems]
    assert any("clashes" in e for e in found) == clash, found


def test_a_proxy_in_a_shared_profile_clashes_with_itself(tmp_path):
    text = """\
    lab: demo
    profiles:
      p:
        devices:
          root: {type: disk, path: /, pool: default}
          http: {type: proxy, listen: "tcp:127.0.0.1:80", connect: "tcp:127.0.0.1:80"}
    containers:
      a: {image: x, profiles: [p]}
      b: {image: x, profiles: [p]}
    """
    assert any("profiles.p.devices.http.listen" in e for e in errors(tmp_path, text))


def test_a_profile_list_without_a_root_disk(tmp_path):
    text = """\
    lab: demo
    profiles:
      bare: {}
    containers:
      a: {image: x, profiles: [bare]}
    """
    assert any("containers.a.profiles: no root disk" in e for e in errors(tmp_path, text))


def test_environment_interpolation_with_defaults_and_escapes(tmp_path):
    text = """\
    lab: demo
    containers:
      a:
        image: ${IMAGE:-reconciler-tiny}
        config: {user.note: "$${NOT_A_VAR} ${WHO}"}
    """
    lab, _ = load(tmp_path, text, env={"WHO": "me"})
    assert lab.containers["a"].image == "reconciler-tiny"
    assert lab.containers["a"].config["user.note"] == "${NOT_A_VAR} me"


def test_an_unset_variable_without_default_is_an_error_at_its_place(tmp_path):
    found = errors(tmp_path, "lab: demo\ncontainers:\n  a:\n    image: ${IMAGE}\n")
    assert found == [f"{tmp_path / 'lab.yaml'}:4:12: containers.a.image: environment variable IMAGE is not set"
                     " (set it, or write ${IMAGE:-default})"]


def test_the_override_file_beside_it_is_merged_and_its_errors_name_it(tmp_path):
    lab, _ = load(tmp_path, GOOD, override="containers:\n  web1:\n    config: {limits.cpu: 2}\n")
    assert lab.containers["web1"].config["limits.cpu"] == "2"
    assert lab.containers["web1"].profiles == ["base"]  # untouched keys kept
    found = errors(tmp_path, GOOD, override="containers:\n  web1:\n    colour: blue\n")
    assert found[0].startswith(f"{tmp_path / 'lab.override.yaml'}:3:5: containers.web1.colour")


def test_yaml_anchors_and_merge_keys_work_from_x_extension_keys(tmp_path):
    text = """\
    lab: demo
    x-web: &web
      image: reconciler-tiny
      config: {limits.cpu: 1}
    containers:
      a: {<<: *web, description: first}
    """
    lab, _ = load(tmp_path, text)
    assert lab.containers["a"].image == "reconciler-tiny" and lab.containers["a"].description == "first"
    found = errors(tmp_path, text.replace("x-web", "xweb"))  # any other unknown key is an error
    assert any("xweb: unknown field" in e for e in found)


def test_null_in_the_override_removes_a_key(tmp_path):
    lab, _ = load(tmp_path, GOOD, override="containers:\n  web1:\n    devices: {http: null}\n")
    assert lab.containers["web1"].devices == {}


def test_validate_command_exit_codes(tmp_path, capsys):
    path = tmp_path / "lab.yaml"
    path.write_text("lab: demo\ncontainers:\n  a: {image: x, bogus: 1}\n")
    assert main(["validate", "-f", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "containers.a.bogus: unknown field" in err and "Traceback" not in err
    path.write_text(GOOD)
    assert main(["validate", "-f", str(path)]) == 0


def test_missing_file_is_one_clear_error(tmp_path, capsys):
    assert main(["validate", "-f", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml:1:1: (top level): no such file" in capsys.readouterr().err


def test_the_committed_schema_matches_the_models():
    committed = json.loads((ROOT / "schemas" / "lab.schema.json").read_text())
    assert committed == json_schema(), "run `make schema` and commit schemas/lab.schema.json"


def test_the_repository_lab_and_examples_validate():
    for path in [ROOT / "lab.yaml", *sorted((ROOT / "examples").glob("*.yaml"))]:
        if ".override" not in path.name:
            load_lab(path, {})


def test_the_real_lan_override_example_merges_into_the_repository_lab(tmp_path):
    (tmp_path / "lab.yaml").write_text((ROOT / "lab.yaml").read_text())
    (tmp_path / "lab.override.yaml").write_text((ROOT / "examples" / "lab.override.example.yaml").read_text())
    lab, _ = load_lab(tmp_path / "lab.yaml", {})
    assert lab.networks == {}
    assert lab.profiles["macvlan"].devices["eth0"]["parent"] == "eno1"
    assert lab.containers["proxyha"].devices["http"]["listen"] == "tcp:0.0.0.0:80"


def test_the_repository_lab_defaults_are_safe():
    lab, _ = load_lab(ROOT / "lab.yaml", {})
    assert lab.profiles["macvlan"].devices["eth0"]["parent"] == "labnet0"
    assert all(d["listen"].startswith("tcp:127.0.0.1:") for d in lab.containers["proxyha"].devices.values())
