"""Hostile lab.yaml files, each refused by `reconcile validate` with a located, one-line reason.

CASES is the corpus: (case_id, klass, yaml_text, expected_fragment). Every case runs in a
folder of its own that also holds the files `source:` cases point at (see `lab_folder`).
test_schema_agrees.py runs the same corpus through the JSON Schema.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.spec import read_source

HEADER = "lab: hostile\n"
WEB = "  web1:\n    image: reconciler-tiny\n"


def container(extra: str) -> str:
    """A lab with one container web1, `extra` being more of its keys (indented by 4)."""
    return HEADER + "containers:\n" + WEB + extra


def file_at(path: str, spec: str = "{content: x}") -> str:
    return container(f"    files:\n      {path}: {spec}\n")


def source(value: str) -> str:
    return file_at("/etc/app.conf", f"{{source: {value}}}")


def service(name: str, spec: str = "{}") -> str:
    return container(f"    services:\n      {name}: {spec}\n")


def proxy(listen: str, connect: str = "tcp:127.0.0.1:80", extra: str = "") -> str:
    return container(f'    devices:\n      http: {{type: proxy, listen: "{listen}", connect: "{connect}"{extra}}}\n')


def network(config: str, more: str = "") -> str:
    return HEADER + f"networks:\n  lan0: {{config: {{{config}}}}}\n{more}"


GUIDE_HAPROXY = """\
containers:
  web1: {image: reconciler-tiny}
  web2: {image: reconciler-tiny}
  proxyha: {image: reconciler-tiny}
haproxy:
  proxyha:
    frontends:
      http_frontend:
        bind: "*:80"
        %s
    backends:
      subdomain1:
        servers:
          - {name: site1, container: web1, port: 80}
          - %s
"""


def guide(frontend: str = "routes: [{host: site1.testdomain.com, backend: subdomain1}]",
          server: str = "{name: site2, container: web2, port: 80}") -> str:
    return HEADER + GUIDE_HAPROXY % (frontend, server)


CASES = [
    # source: files leaking host files into plans, or breaking plan with a traceback
    ("source-absolute", "source", source("/etc/shadow"), "must be a path relative to the lab file's folder"),
    ("source-dotdot", "source", source("../../../etc/shadow"), "without '..'"),
    ("source-symlink-out", "source", source("escape"), "outside the lab's folder"),
    ("source-symlink-loop", "source", source("loop"), "cannot be read"),
    ("source-missing", "source", source("nope.txt"), "source file 'nope.txt' does not exist"),
    ("source-directory", "source", source("adir"), "is not a regular file"),
    ("source-fifo", "source", source("fifo"), "is not a regular file"),
    ("source-too-big", "source", source("big.bin"), "at most 8 MiB"),
    # service names reaching systemctl as arguments
    ("service-option", "service", service('"--host=root@evil"'), "is not a systemd unit name"),
    ("service-newline", "service", service('"apache2\\nevil"'), "control or invisible character U+000A"),
    ("service-semicolon", "service", service('"apache2;reboot"'), "is not a systemd unit name"),
    ("service-device-unit", "service", service("dev-sda.device"), "is a .device unit"),
    ("service-template", "service", service("getty@"), "is a template"),
    ("service-watches-dotdot", "service", service("apache2", "{watches: [/etc/../shadow]}"),
     "must not contain '.' or '..' components"),
    # file paths with characters that split a line or drive a terminal, or not canonical
    ("path-cr", "path", file_at('"/tmp/a\\rb"'), "U+000D"),
    ("path-vt", "path", file_at('"/tmp/a\\vb"'), "U+000B"),
    ("path-ff", "path", file_at('"/tmp/a\\fb"'), "U+000C"),
    ("path-file-separator", "path", file_at('"/tmp/a\\x1cb"'), "U+001C"),
    ("path-nel", "path", file_at('"/tmp/a\\Nb"'), "U+0085"),
    ("path-line-separator", "path", file_at('"/tmp/a\\Lb"'), "U+2028"),
    ("path-escape-sequence", "path", file_at('"/tmp/\\e[2Jx"'), "U+001B"),
    ("path-bidi-override", "path", file_at('"/tmp/\\u202Etxt.exe"'), "U+202E"),
    ("path-dotdot", "path", file_at("/etc/app/../shadow"), "'..' components"),
    ("path-double-slash", "path", file_at("/etc//app.conf"), "must not contain '//'"),
    ("path-trailing-slash", "path", file_at("/etc/app/"), "must not end with '/'"),
    ("path-relative", "path", file_at("etc/app.conf"), "must be an absolute path"),
    ("path-long-component", "path", file_at("/tmp/" + "€" * 100), "longer than 255 bytes"),
    # proxy devices LXD would refuse, or that would exhaust the host
    ("proxy-not-an-ip", "proxy", proxy("tcp:not an ip:80"), "'not an ip' is not an IPv4 address"),
    ("proxy-bad-address", "proxy", proxy("tcp:999.999.999.999:99999"), "'999.999.999.999' is not an IPv4"),
    ("proxy-bad-port", "proxy", proxy("tcp:127.0.0.1:99999"), "port 99999 is not 1 to 65535"),
    ("proxy-huge-range", "proxy", proxy("tcp:0.0.0.0:1-65535"), "has 65535 ports; at most 1024"),
    ("proxy-backwards-range", "proxy", proxy("tcp:127.0.0.1:90-80"), "runs backwards"),
    ("proxy-star", "proxy", proxy("tcp:*:80"), "LXD wants 0.0.0.0"),
    ("proxy-protocol", "proxy", proxy("sctp:127.0.0.1:80"), "is not tcp:ADDRESS:PORT"),
    ("proxy-unix-on-host", "proxy", proxy("unix:/etc/passwd"), "a unix socket listen with bind: host"),
    ("proxy-host-socket", "proxy", proxy("tcp:127.0.0.1:80", "unix:/var/lib/lxd/unix.socket", ", bind: instance"),
     "reaches a host socket"),
    ("proxy-port-count", "proxy", proxy("tcp:127.0.0.1:80-81", "tcp:127.0.0.1:80-82"), "different number of ports"),
    ("proxy-unknown-key", "proxy", proxy("tcp:127.0.0.1:80", extra=", listne: x"), "did you mean 'listen'?"),
    ("proxy-nat-not-bool", "proxy", proxy("tcp:127.0.0.1:80", extra=", nat: perhaps"), "is not a boolean"),
    # bridges: values LXD refuses, or that take the host's own addresses
    ("bridge-banana", "bridge", network("ipv4.address: banana"), "'banana' is not an IPv4 address with a prefix"),
    ("bridge-network-address", "bridge", network("ipv4.address: 10.9.0.0/24"), "own network address"),
    ("bridge-loopback", "bridge", network("ipv4.address: 127.0.0.1/8"), "would break the host"),
    ("bridge-nat-not-bool", "bridge", network("ipv4.address: 10.9.0.1/24, ipv4.nat: maybe"), "is not a boolean"),
    ("bridge-ipv6-link-local", "bridge", network("ipv6.address: 'fe80::1/64'"), "link-local"),
    ("bridge-no-room", "bridge", network("ipv4.address: 10.9.0.1/32"), "leaves no address for containers"),
    ("bridge-dhcp-backwards", "bridge", network("ipv4.address: 10.9.0.1/24, ipv4.dhcp.ranges: 10.9.0.200-10.9.0.100"),
     "'10.9.0.200-10.9.0.100' ends before it starts"),
    ("bridge-dhcp-not-a-range", "bridge", network("ipv4.address: 10.9.0.1/24, ipv4.dhcp.ranges: 10.9.0.100"),
     "'10.9.0.100' is not a range of two IPv4 addresses"),
    ("bridge-dhcp-outside", "bridge", network("ipv4.address: 10.9.0.1/24, ipv4.dhcp.ranges: 10.9.1.100-10.9.1.200"),
     "not inside the bridge's subnet 10.9.0.0/24"),
    ("bridge-overlap", "bridge", network("ipv4.address: 10.9.0.1/24",
                                         "  lan1: {config: {ipv4.address: 10.9.0.129/25}}\n"),
     "10.9.0.129/25 overlaps network 'lan0' (10.9.0.1/24)"),
    # objects both owned and existing: plan would take over what the lab only uses
    ("existing-profile", "existing", HEADER + "existing: {profiles: [default, base]}\nprofiles:\n  base: {}\n",
     "'base' is declared here and listed under existing.profiles"),
    ("existing-default", "existing", HEADER + "profiles:\n  default: {}\n", "which is [default] unless written"),
    ("existing-network", "existing", HEADER + "existing: {networks: [lxdbr0]}\nnetworks:\n  lxdbr0: {}\n",
     "listed under existing.networks"),
    # the guide's own mistakes, pointed at their fix
    ("guide-server-hostname", "guide", guide(server="{name: site2, container: web2.testdomain.com, port: 80}"),
     "did you mean 'web2'?"),
    ("guide-acl", "guide", guide("acl: web_host1 hdr(host) -i site1.testdomain.com"),
     "HAProxy acl/use_backend lines are written as routes: [{host: ..., backend: ...}]"),
    ("guide-use-backend", "guide", guide("use_backend: subdomain1 if web_host1"), "written as routes:"),
    ("guide-server-line", "guide", guide(server="server site2 web2.testdomain.com:80 check"),
     "write {name: site2, container: web2, port: 80}"),
    ("guide-profile-assign", "guide", container("    profiles: ['default,macvlan']\n"),
     "list them, [default, macvlan]"),
    # values that would inject into LXD, the package manager, chown or haproxy.cfg
    ("inject-config-key", "inject", container('    config: {"limits.cpu\\nraw.lxc": 1}\n'), "invalid config key"),
    ("inject-reserved-key", "inject", container("    config: {user.reconciler.lab: other}\n"), "belong to LXD"),
    ("inject-package-option", "inject", container("    packages: [-oAPT::Get::AllowUnauthenticated=1]\n"),
     "is not a package name"),
    ("inject-owner", "inject", file_at("/etc/app.conf", "{content: x, owner: 'root; rm -rf /'}"),
     "is not a user or group name"),
    ("inject-mode-number", "inject", file_at("/etc/app.conf", "{content: x, mode: 0644}"), "quote it: mode: \"0644\""),
    ("inject-lab-name", "inject", "lab: 'evil\\nlab'\n", "lowercase letters"),
    ("inject-backend-name", "inject",
     guide().replace("      subdomain1:", '      "subdomain1\\n    listen x":'), "line break"),
    ("inject-project", "inject", HEADER + "lxd: {project: '../instances'}\n", "is not an LXD project name"),
    ("inject-device-type", "inject", proxy("tcp:127.0.0.1:80").replace("type: proxy", "type: proxi"),
     "unknown device type 'proxi'; did you mean 'proxy'?"),
    ("haproxy-under-its-container", "guide", HEADER + "containers:\n" + WEB + "    haproxy: {frontends: {}}\n",
     "containers.web1.haproxy: unknown field; haproxy: goes at the top level of the file"),
    ("inject-route-host", "inject", guide("routes: [{host: 'a.com b.com', backend: subdomain1}]"), "whitespace"),
]

PROBLEM_LINE = re.compile(r"^(?P<file>.+?):(?P<line>[0-9]+):(?P<col>[0-9]+): (?P<field>\S.*?): (?P<message>\S.*)$")


def lab_folder(folder: Path) -> Path:
    """A lab folder, and the things `source:` cases point at, beside and outside it."""
    outside = folder / "outside"
    outside.mkdir(parents=True)
    (outside / "secret.txt").write_text("host secret\n")
    lab = folder / "lab"
    lab.mkdir()
    (lab / "inside.txt").write_text("fine\n")
    (lab / "escape").symlink_to(outside / "secret.txt")
    (lab / "loop").symlink_to(lab / "loop")
    (lab / "adir").mkdir()
    os.mkfifo(lab / "fifo")
    with open(lab / "big.bin", "wb") as big:  # sparse: costs no disk
        big.truncate(9 * 1024 * 1024)
    return lab


def validate(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", "-f", str(path)])
    return code, out.getvalue(), err.getvalue()


def test_the_corpus_covers_every_class():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids)) and len(CASES) >= 20
    assert {case[1] for case in CASES} == {"source", "service", "path", "proxy", "bridge", "existing", "guide",
                                           "inject"}


@pytest.mark.parametrize("case_id, klass, text, fragment", CASES, ids=[c[0] for c in CASES])
def test_validate_refuses_with_a_located_line(tmp_path, case_id, klass, text, fragment):
    path = lab_folder(tmp_path) / "lab.yaml"
    path.write_text(text)
    code, out, err = validate(path)
    assert code == 1 and out == "", (out, err)
    lines = err.splitlines()
    assert lines and "Traceback" not in err
    for line in lines:
        match = PROBLEM_LINE.match(line)
        assert match and match["file"] == str(path), line
    assert any(fragment in line for line in lines), err


def test_no_problem_line_carries_a_control_character(tmp_path):
    """Keys and values print escaped: a report line never splits or drives the terminal."""
    for case_id, _, text, _ in CASES:
        path = lab_folder(tmp_path / case_id) / "lab.yaml"
        path.write_text(text)
        err = validate(path)[2]
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]", err), (case_id, err)


def test_a_source_file_inside_the_folder_and_a_symlink_within_it_are_fine(tmp_path):
    folder = lab_folder(tmp_path)
    (folder / "link").symlink_to("inside.txt")
    for name in ("inside.txt", "link", "./inside.txt"):
        path = folder / "lab.yaml"
        path.write_text(source(name))
        assert validate(path)[0] == 0, validate(path)


def test_every_problem_at_once_across_kinds(tmp_path):
    """A type error, a bad name, a bad value and a cross-reference error: all four reported."""
    text = HEADER + """\
profiles:
  base: {devices: {root: {type: disk, path: /, pool: default}}}
containers:
  9web: {image: reconciler-tiny, profiles: [base]}
  web1: {image: reconciler-tiny, state: paused}
  web2:
    image: reconciler-tiny
    profiles: [base, nope]
    devices: {http: {type: proxy, listen: "tcp:*:80", connect: "tcp:127.0.0.1:80"}}
"""
    path = lab_folder(tmp_path) / "lab.yaml"
    path.write_text(text)
    err = validate(path)[2]
    for fragment in ("containers.9web: '9web' is not a valid container name",
                     "containers.web1.state: Input should be 'running' or 'stopped'",
                     "containers.web2.devices.http.listen: '*' is not an address",
                     "containers.web2.profiles[1]: unknown profile 'nope'"):
        assert fragment in err, err


def test_a_bad_bridge_address_hides_no_problem_of_its_dhcp_ranges(tmp_path):
    path = lab_folder(tmp_path) / "lab.yaml"
    path.write_text(network("ipv4.address: 10.9.0.300/24, ipv4.dhcp.ranges: '10.9.0.200-10.9.0.100'"))
    code, _, err = validate(path)
    assert code == 1
    assert "networks.lan0.config[\"ipv4.address\"]: '10.9.0.300/24' is not an IPv4 address" in err, err
    assert "networks.lan0.config[\"ipv4.dhcp.ranges\"]: '10.9.0.200-10.9.0.100' ends before it starts" in err, err


def test_an_invalid_entry_is_not_unknown_and_its_other_values_are_still_checked(tmp_path):
    text = HEADER + """\
profiles:
  base: {devices: {root: {type: disk, path: /, pool: default}}, colour: blue}
containers:
  web1:
    image: reconciler-tiny
    profiles: [base]
    state: paused
    services: {"--now": {}}
    files: {/etc/app.conf: {source: nope.txt}}
haproxy:
  web1:
    frontends: {f: {bind: "*:80", default_backend: b}}
    backends: {b: {servers: [{container: web1}], balanse: x}}
"""
    path = lab_folder(tmp_path) / "lab.yaml"
    path.write_text(text)
    err = validate(path)[2]
    assert "unknown profile" not in err and "no root disk" not in err and "not a lab container" not in err, err
    for fragment in ("profiles.base.colour: unknown field", "containers.web1.state:",
                     "service '--now' is not a systemd unit name", "source file 'nope.txt' does not exist",
                     "haproxy.web1.backends.b.balanse: unknown field; did you mean 'balance'?"):
        assert fragment in err, err


def test_a_section_that_is_not_a_mapping_hides_no_other_problem(tmp_path):
    text = HEADER + "profiles: [base]\ncontainers:\n  web1: {image: reconciler-tiny, profiles: [base], state: x}\n"
    path = lab_folder(tmp_path) / "lab.yaml"
    path.write_text(text)
    err = validate(path)[2]
    assert "profiles: Input should be a valid dictionary" in err and "containers.web1.state" in err
    assert "unknown profile" not in err, err


def test_read_source_checks_again_as_it_reads(tmp_path):
    folder = lab_folder(tmp_path)
    assert read_source(folder, "inside.txt") == b"fine\n"
    for name in ("escape", "fifo", "nope.txt", "../outside/secret.txt"):
        with pytest.raises(ValueError):
            read_source(folder, name)
