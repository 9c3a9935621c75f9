"""The facts script, its framing, and the commands for packages and services.  The script runs
here, on the host's own sh and coreutils, over files in a temporary directory: no LXD needed."""

from __future__ import annotations

import subprocess

import pytest

from reconciler.facts import FactsError, content_argv, facts_argv, parse_facts, record_text
from reconciler.kinds.file import sha256
from reconciler.kinds.package import install_argv
from reconciler.kinds.service import argvs_for


def facts_here(**kwargs):
    argv = facts_argv(**kwargs)
    done = subprocess.run(argv, capture_output=True, check=False)  # bytes: no newline translation
    assert done.returncode == 0, done.stderr
    return parse_facts(done.stdout.decode("utf-8", "replace"))


def test_the_facts_script_reads_files_directories_and_absences_in_one_run(tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    (tmp_path / "a.txt").chmod(0o640)
    (tmp_path / "d").mkdir()
    (tmp_path / "name with space").write_bytes(b"\x00\x01")
    paths = [str(tmp_path / p) for p in ("a.txt", "d", "missing", "name with space")]
    facts = facts_here(files=paths)
    a, d = facts.files[paths[0]], facts.files[paths[1]]
    assert a == {"type": "file", "mode": "0640", "uid": 0, "gid": 0, "sha256": sha256(b"hello\n"), "size": 6}
    assert d["type"] == "directory" and paths[2] not in facts.files
    assert facts.files[paths[3]]["sha256"] == sha256(b"\x00\x01")
    done = subprocess.run(content_argv([paths[0], paths[3]]), capture_output=True, check=True)
    shown = parse_facts(done.stdout.decode("utf-8", "replace"), into=facts)
    assert shown.files[paths[0]]["content"] == b"hello\n" and shown.files[paths[3]]["content"] == b"\x00\x01"
    assert facts.users["root"] == 0 and facts.groups["root"] == 0
    assert facts.package_manager == "apt-get" and facts.os_id in ("debian", "ubuntu")


def test_a_secret_file_is_compared_by_digest_and_its_content_never_read(tmp_path):
    key = tmp_path / "key"
    key.write_text("hunter2\n")
    facts = facts_here(secret_files=[str(key)])
    assert facts.files[str(key)]["sha256"] == sha256(b"hunter2\n")
    assert "content" not in facts.files[str(key)]


def test_the_record_brings_in_the_files_it_names(tmp_path):
    old = tmp_path / "old.conf"
    old.write_text("x\n")
    record = tmp_path / "lab.applied"
    record.write_text(record_text("lab", {f"file:{old}": "0123456789abcdef", "package:curl": "fedcba9876543210"}))
    facts = facts_here(record=str(record))
    assert facts.files[str(old)]["type"] == "file"
    assert facts.record == {f"file:{old}": "0123456789abcdef", "package:curl": "fedcba9876543210"}


@pytest.mark.parametrize("name", ["a\nsvc enabled active haproxy", "x\x00svc\x00haproxy\x00enabled\x00active",
                                  "--host=root@evil", "weird\rname", "a\u2028b"])
def test_no_value_can_forge_a_record_of_the_facts_answer(tmp_path, name):
    """Whatever a path holds, it comes back as one field of one record (NUL cannot be passed at all)."""
    if "\x00" in name:
        with pytest.raises(ValueError):
            facts_here(files=[str(tmp_path / name)])
        return
    path = tmp_path / name
    path.write_text("data")
    facts = facts_here(files=[str(path)], services=["haproxy"])
    assert set(facts.files) == {str(path)}
    assert facts.files[str(path)]["type"] == ("other" if "\n" in name else "file")  # never split into lines
    assert facts.services.get("haproxy", {"running": False})["running"] is False  # no forged "active" line


def test_a_cut_short_answer_is_an_error_not_a_guess():
    whole = "os\0debian\0pm\0apt-get\0units\0haproxy\0UnitFileState=enabled\nActiveState=active\0end\0"
    assert parse_facts(whole).services["haproxy"] == {"enabled": True, "running": True}
    for cut in (whole[:-5], whole[:20], "os\0debian\0units\0haproxy\0"):
        with pytest.raises(FactsError):
            parse_facts(cut)


def test_package_state_comes_from_the_package_manager():
    facts = facts_here(packages=["coreutils", "surely-not-a-package"])
    assert facts.packages == {"coreutils": True, "surely-not-a-package": False}


@pytest.mark.parametrize("manager, argv", [
    ("apt-get", ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "--", "httpd"]),
    ("dnf", ["dnf", "install", "-y", "-q", "--", "httpd"]),
    ("apk", ["apk", "add", "-q", "--", "httpd"]),
])
def test_install_uses_the_containers_own_package_manager_and_ends_options(manager, argv):
    assert install_argv(manager, ["httpd"]) == argv


def test_no_package_manager_is_a_clear_error():
    with pytest.raises(ValueError, match="no known package manager"):
        install_argv("none", ["httpd"])


@pytest.mark.parametrize("want, have, trigger, expected", [
    ({"enabled": True, "running": True}, None, None,
     [["systemctl", "enable", "--quiet", "--", "x"], ["systemctl", "start", "--", "x"]]),
    ({"enabled": False, "running": False}, {"enabled": True, "running": True}, None,
     [["systemctl", "disable", "--quiet", "--", "x"], ["systemctl", "stop", "--", "x"]]),
    ({"enabled": True, "running": True}, {"enabled": True, "running": True}, "reload",
     [["systemctl", "reload", "--", "x"]]),
    ({"enabled": True, "running": True}, {"enabled": True, "running": False}, "reload",
     [["systemctl", "start", "--", "x"]]),
    ({"enabled": True, "running": True}, {"enabled": True, "running": True}, None, []),
])
def test_service_commands_go_from_what_is_to_what_is_wanted(want, have, trigger, expected):
    assert argvs_for("x", want, have, trigger) == expected
