"""The facts script and the commands for packages and services.  The script runs here, on the
host's own sh and coreutils, over files in a temporary directory: no LXD needed."""

from __future__ import annotations

import subprocess

import pytest

from reconciler.provision import (facts_argv, install_argv, manifest_text, parse_facts, recorded_paths,
                                  service_argvs, sha256)


def facts_here(*args, **kwargs):
    argv = facts_argv(*args, **kwargs)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return parse_facts(done.stdout)


def test_the_facts_script_reads_files_directories_and_absences_in_one_run(tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    (tmp_path / "a.txt").chmod(0o640)
    (tmp_path / "d").mkdir()
    (tmp_path / "name with space").write_bytes(b"\x00\x01")
    paths = [str(tmp_path / p) for p in ("a.txt", "d", "missing", "name with space")]
    facts = facts_here(paths, [], [])
    a, d = facts.files[paths[0]], facts.files[paths[1]]
    assert a == {"type": "file", "mode": "0640", "uid": 0, "gid": 0, "sha256": sha256(b"hello\n"), "size": 6,
                 "content": b"hello\n"}
    assert d["type"] == "directory" and paths[2] not in facts.files
    assert facts.files[paths[3]]["content"] == b"\x00\x01"
    assert facts.users["root"] == 0 and facts.groups["root"] == 0
    assert facts.package_manager == "apt-get" and facts.os_id in ("debian", "ubuntu")


def test_the_manifest_brings_in_the_files_it_records(tmp_path):
    old = tmp_path / "old.conf"
    old.write_text("x\n")
    manifest = tmp_path / "lab.files"
    manifest.write_text(manifest_text("lab", [str(old)]))
    facts = facts_here([str(manifest)], [], [], manifest=str(manifest))
    assert facts.files[str(old)]["type"] == "file"
    assert recorded_paths(manifest.read_text()) == [str(old)]


def test_package_state_comes_from_the_package_manager():
    facts = facts_here([], ["coreutils", "surely-not-a-package"], [])
    assert facts.packages == {"coreutils": True, "surely-not-a-package": False}


def test_listen_lines_are_parsed():
    facts = parse_facts("svc enabled active haproxy\nlisten yes 80 haproxy\nlisten no 81 haproxy\n")
    assert facts.services["haproxy"] == {"enabled": True, "running": True}
    assert facts.listening == {"haproxy": [80]}


@pytest.mark.parametrize("manager, argv", [
    ("apt-get", ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "--", "httpd"]),
    ("dnf", ["dnf", "install", "-y", "-q", "httpd"]),
    ("apk", ["apk", "add", "-q", "httpd"]),
])
def test_install_uses_the_containers_own_package_manager(manager, argv):
    assert install_argv(manager, ["httpd"]) == argv


def test_no_package_manager_is_a_clear_error():
    with pytest.raises(ValueError, match="no known package manager"):
        install_argv("none", ["httpd"])


@pytest.mark.parametrize("want, have, trigger, expected", [
    ({"enabled": True, "running": True}, None, None,
     [["systemctl", "enable", "--quiet", "x"], ["systemctl", "start", "x"]]),
    ({"enabled": False, "running": False}, {"enabled": True, "running": True}, None,
     [["systemctl", "disable", "--quiet", "x"], ["systemctl", "stop", "x"]]),
    ({"enabled": True, "running": True}, {"enabled": True, "running": True}, "reload", [["systemctl", "reload", "x"]]),
    ({"enabled": True, "running": True}, {"enabled": True, "running": False}, "reload", [["systemctl", "start", "x"]]),
    ({"enabled": True, "running": True}, {"enabled": True, "running": True}, None, []),
])
def test_service_commands_go_from_what_is_to_what_is_wanted(want, have, trigger, expected):
    assert service_argvs("x", want, have, trigger) == expected
