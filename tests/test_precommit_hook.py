"""The pre-commit hook (.pre-commit-hooks.yaml) with the real pre-commit, in a throwaway git
repository: pre-commit builds the hook's own Python environment from this repository (PyPI for the
dependencies), then validates changed lab files, an override merged onto its base.  No LXD."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BAD_OVERRIDE = "containers:\n  web1:\n    imgae: x\n"


def sh(cwd: Path, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def hook_source(into: Path) -> tuple[Path, str]:
    """This checkout as pre-commit fetches a hook: a git repository and a commit, the working tree's
    uncommitted changes included (as `pre-commit try-repo` does, but made once: pre-commit then builds
    the hook's environment once for the module, not once per run)."""
    source = into / "hook-source"
    sh(into, "git", "clone", "-q", str(ROOT), str(source))
    listed = sh(ROOT, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    sh(source, "git", "add", "-A", env=GIT_USER)
    sh(source, "git", "commit", "-q", "--allow-empty", "-m", "this checkout", env=GIT_USER)
    return source, sh(source, "git", "rev-parse", "HEAD").stdout.strip()


GIT_USER = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    """A git repository holding the guide's lab and a .pre-commit-config.yaml that uses this checkout's
    hook, and pre-commit's environment (its cache kept for the module)."""
    path = tmp_path_factory.mktemp("labs")
    source, rev = hook_source(tmp_path_factory.mktemp("hook"))
    env = {**GIT_USER, "PRE_COMMIT_HOME": str(tmp_path_factory.mktemp("pre-commit-home"))}
    sh(path, "git", "init", "-q")
    (path / "lab.yaml").write_text((ROOT / "lab.yaml").read_text())
    (path / "notes.yaml").write_text("not: a lab\n")
    (path / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {source}\n    rev: {rev}\n    hooks:\n      - id: reconcile-validate\n")
    sh(path, "git", "add", ".", env=env)
    return path, env


def run_hook(repo, *files: str) -> subprocess.CompletedProcess:
    """The hook run on the files given, as `pre-commit run` runs it."""
    path, env = repo
    return sh(path, sys.executable, "-m", "pre_commit", "run", "reconcile-validate", "--files", *files, env=env)


def test_a_valid_lab_passes(repo):
    done = run_hook(repo, "lab.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reconcile validate" in done.stdout and "Passed" in done.stdout


def test_a_bad_override_fails_through_its_base_with_the_line(repo):
    path, _ = repo
    (path / "lab.override.yaml").write_text(BAD_OVERRIDE)
    try:
        done = run_hook(repo, "lab.override.yaml")
        assert done.returncode == 1, done.stdout
        assert "Failed" in done.stdout
        assert "lab.override.yaml:3:5: containers.web1.imgae: unknown field; did you mean 'image'?" in done.stdout
    finally:
        (path / "lab.override.yaml").unlink()


def test_an_override_named_for_its_base_is_validated_merged_onto_it(repo):
    path, _ = repo
    (path / "lab.override.example.yaml").write_text(BAD_OVERRIDE.replace("imgae", "colour"))
    try:
        done = run_hook(repo, "lab.override.example.yaml")
        assert done.returncode == 1 and "Failed" in done.stdout, done.stdout
        assert "lab.override.example.yaml:3:5: containers.web1.colour: unknown field" in done.stdout
    finally:
        (path / "lab.override.example.yaml").unlink()


def test_files_that_are_not_labs_are_not_validated(repo):
    done = run_hook(repo, "notes.yaml")
    assert done.returncode == 0 and "(no files to check)Skipped" in done.stdout, done.stdout


def test_an_installed_hook_refuses_a_commit_with_an_invalid_lab(repo):
    path, env = repo
    installed = sh(path, sys.executable, "-m", "pre_commit", "install", env=env)
    assert installed.returncode == 0, installed.stderr
    sh(path, "git", "add", ".", env=env)
    assert sh(path, "git", "commit", "-qm", "the guide's lab", env=env).returncode == 0

    (path / "lab.yaml").write_text((path / "lab.yaml").read_text().replace("{{ vars.marker }}", "{{ vars.markr }}"))
    sh(path, "git", "add", "lab.yaml", env=env)
    refused = sh(path, "git", "commit", "-qm", "a typo", env=env)
    assert refused.returncode != 0
    assert "lab.yaml:58:7: containers.web1.files[\"/var/www/html/index.html\"].template: unknown template value" \
           " {{ vars.markr }}" in refused.stdout + refused.stderr
    assert sh(path, "git", "log", "--format=%s").stdout.splitlines() == ["the guide's lab"]
