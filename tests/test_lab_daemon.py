"""Which daemon `make lab` brings the guide's lab up on (scripts/lab-daemon.sh, the Makefile's DAEMON):
Incus on a machine with Incus and no LXD, LXD otherwise, and DAEMON=incus on a machine with both.
The machine is a PATH of stand-in commands, so nothing here installs, starts or asks a daemon: the
commands `make -n` prints are the proof that an Incus-only machine never gets LXD."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = ROOT / "scripts" / "lab-daemon.sh"
MAKE = shutil.which("make") or "/usr/bin/make"


def machine(tmp_path: Path, *commands: str, incusd: bool = False) -> dict[str, str]:
    """An environment whose PATH holds only bash and the named commands (each exits 0), and an incusd
    where Debian puts it when asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to(shutil.which("bash") or "/bin/bash")
    for name in commands:
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    daemon = tmp_path / "incusd"
    if incusd:
        daemon.write_text("#!/bin/sh\nexit 0\n")
        daemon.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DAEMON", "LXD_DIR", "INCUS_DIR", "MAKEFLAGS")}
    return {**env, "PATH": str(bin_dir), "INCUSD": str(daemon)}


def chosen(env: dict[str, str]) -> str:
    done = subprocess.run(["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(("commands", "incusd", "daemon"), [
    (("incus",), True, "incus"),             # Incus only
    (("incus", "lxc", "lxd"), True, "lxd"),  # both: LXD, as before Incus
    (("incus", "lxc"), True, "lxd"),         # LXD's client alone counts as LXD
    (("lxc", "lxd"), False, "lxd"),          # LXD only
    ((), False, "lxd"),                      # a fresh machine: lxd-up.sh installs LXD
    (("incus",), False, "lxd"),              # the incus client without its daemon is no Incus
])
def test_the_lab_goes_to_incus_only_on_a_machine_with_incus_and_no_lxd(tmp_path, commands, incusd, daemon):
    assert chosen(machine(tmp_path, *commands, incusd=incusd)) == daemon


def make_lab(env: dict[str, str], *args: str) -> list[str]:
    """The commands `make lab` would run (dry run), without the venv's set-up."""
    done = subprocess.run([MAKE, "-n", "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.installed", "lab", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_make_lab_on_an_incus_only_machine_uses_incus_and_never_lxd(tmp_path):
    commands = make_lab(machine(tmp_path, "incus", incusd=True))
    assert commands[0] == "env -u LXD_DIR INCUS_DIR=/var/lib/incus INCUS_IMAGES=none scripts/incus-up.sh"
    assert "env -u LXD_DIR INCUS_DIR=/var/lib/incus IMAGE_CLIENT=incus scripts/image-debian.sh" in commands
    assert commands[-2:] == ["env -u LXD_DIR INCUS_DIR=/var/lib/incus .venv/bin/reconcile apply --yes",
                             "env -u LXD_DIR INCUS_DIR=/var/lib/incus .venv/bin/reconcile check"]
    assert not [c for c in commands if "lxd-up.sh" in c or "lxc" in c.split()], commands


@pytest.mark.parametrize("commands", [("lxc", "lxd"), ()])
def test_make_lab_with_lxd_or_with_neither_daemon_uses_lxd_as_before(tmp_path, commands):
    assert make_lab(machine(tmp_path, *commands)) == [
        "scripts/lxd-up.sh", "scripts/lan-up.sh", "IMAGE_CLIENT=lxc scripts/image-debian.sh",
        ".venv/bin/reconcile apply --yes", ".venv/bin/reconcile check"]


def test_daemon_incus_forces_incus_on_a_machine_with_both(tmp_path):
    commands = make_lab(machine(tmp_path, "incus", "lxc", "lxd", incusd=True), "DAEMON=incus")
    assert commands[0].endswith("INCUS_IMAGES=none scripts/incus-up.sh")
    assert not [c for c in commands if "lxd-up.sh" in c], commands


def test_an_unknown_daemon_is_refused_by_name(tmp_path):
    done = subprocess.run([MAKE, "-n", "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.installed", "lab", "DAEMON=podman"],
                          env=machine(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "DAEMON is lxd or incus, not 'podman'" in done.stderr
