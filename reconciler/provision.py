"""Inside a container: files, packages and services; their spec, their facts, their commands.

Pure: the facts of a container are read by ONE exec of FACTS_SCRIPT (a fixed script; the
paths, packages and services are passed as arguments, never spliced into shell text), and
parsed here.  Commands for changes are argv lists, run by lxd.py.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .source import as_written

MAX_SHOWN_BYTES = 256 * 1024  # larger files are compared by hash only


class FileSpec(BaseModel):
    """A file or directory inside a container."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["file", "directory"] = "file"
    content: str | None = Field(None, description="the file's text")
    source: str | None = Field(None, description="a file to copy, relative to lab.yaml")
    template: str | None = Field(None, description="text with {{ lab.name }}, {{ container.name }},"
                                 " {{ containers.NAME.address }} filled in at apply")
    mode: str | None = Field(None, description="octal, e.g. '0644' (default 0644, directories 0755)")
    owner: str = "root"
    group: str = "root"
    secret: bool = Field(False, description="never show the content in plans or logs")
    check: list[str] | None = Field(None, description="argv run on the new file before it goes live;"
                                    " {} is its path; a non-zero exit refuses the change")

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # YAML reads 0644 as the number 644: the mode must be written as a string
            text = as_written(value) or value
            raise ValueError(f'mode must be a string: quote it: mode: "{text}"')  # noqa: TRY004 - pydantic needs ValueError
        if not isinstance(value, str):
            return value  # None, or a type the str field refuses itself
        if not re.match(r"^0?[0-7]{3,4}$", value):
            raise ValueError("mode must be octal, like '0644'")
        return f"{int(value, 8):04o}"

    @field_validator("owner", "group")
    @classmethod
    def _account(cls, value: str) -> str:
        if not re.match(r"^([a-z_][a-z0-9_-]*\$?|\d+)$", value):
            raise ValueError(f"{value!r} is not a user or group name")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "FileSpec":
        given = [k for k in ("content", "source", "template") if getattr(self, k) is not None]
        if self.type == "directory" and given:
            raise ValueError("a directory has no content, source or template")
        if self.type == "file" and len(given) != 1:
            raise ValueError("give exactly one of content, source or template")
        return self

    @property
    def wanted_mode(self) -> str:
        return self.mode or ("0755" if self.type == "directory" else "0644")


class ServiceSpec(BaseModel):
    """A service (systemd unit) inside a container."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    running: bool = True
    watches: list[str] = Field([], description="paths of managed files; a change to one reloads or restarts")
    on_change: Literal["reload", "restart"] = "restart"
    listens: list[int] = Field([], description="TCP ports the service itself must hold while running:"
                               " plan shows a port it does not hold, apply waits for them")

    @field_validator("listens")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        if any(not 0 < p < 65536 for p in value):
            raise ValueError("ports are 1 to 65535")
        return sorted(set(value))


def validate_path(path: str) -> str | None:
    """The problem with a file path, or None."""
    if not path.startswith("/") or "/../" in path + "/" or "\x00" in path or "\n" in path:
        return "must be an absolute path without '..'"
    return None


# --- Facts ------------------------------------------------------------------------------

FACTS_SCRIPT = r"""
set -u
[ -r /etc/os-release ] && . /etc/os-release  # a failed `.` would end a POSIX shell
echo "os ${ID:-unknown} ${ID_LIKE:-}"
pm=none
for c in apt-get dnf yum apk; do command -v $c >/dev/null 2>&1 && { pm=$c; break; }; done
echo "pm $pm"
while IFS=: read -r n _ u _; do echo "user $n $u"; done </etc/passwd
while IFS=: read -r n _ g _; do echo "group $n $g"; done </etc/group
ff() {
  if [ -d "$1" ]; then echo "dir $(stat -c '%a %u %g' "$1") $1"
  elif [ -f "$1" ]; then
    echo "file $(stat -c '%a %u %g %s' "$1") $(sha256sum "$1" | cut -d' ' -f1) $1"
    [ "$(stat -c %s "$1")" -le MAXBYTES ] && { echo "content $1"; base64 -w0 "$1"; echo; }
  elif [ -e "$1" ]; then echo "other $1"
  else echo "absent $1"; fi
}
mode=
for a in "$@"; do
  case "$a" in --manifest|--files|--packages|--services|--listens) mode=$a; continue;; esac
  case "$mode" in
  --manifest)  # what an earlier apply wrote here: removed from lab.yaml means deleted
    ff "$a"
    [ -f "$a" ] && while IFS= read -r p; do case "$p" in /*) ff "$p";; esac; done <"$a";;
  --files) ff "$a";;
  --packages)
    case $pm in
    apt-get) s=$(dpkg-query -W -f='${Status}' "$a" 2>/dev/null);;
    dnf|yum) rpm -q "$a" >/dev/null 2>&1 && s="install ok installed" || s=;;
    apk) apk info -e "$a" >/dev/null 2>&1 && s="install ok installed" || s=;;
    *) s=;;
    esac
    case "$s" in *" installed") echo "pkg installed $a";; *) echo "pkg absent $a";; esac;;
  --services)
    e=$(systemctl is-enabled "$a" 2>/dev/null); r=$(systemctl is-active "$a" 2>/dev/null)
    echo "svc ${e:-unknown} ${r:-unknown} $a";;
  --listens)  # SERVICE/PORT: is PORT held by a process of SERVICE's own cgroup?
    n=${a%/*}; p=${a##*/}; cg=$(systemctl show -p ControlGroup --value "$n" 2>/dev/null); pids=
    for d in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do
      [ -n "$cg" ] && [ -r "$d$cg/cgroup.procs" ] && { pids=$(cat "$d$cg/cgroup.procs"); break; }
    done
    held=no
    for pid in $pids; do ss -ltnpH "sport = :$p" 2>/dev/null | grep -q "pid=$pid," && { held=yes; break; }; done
    echo "listen $held $p $n";;
  esac
done
exit 0
""".replace("MAXBYTES", str(MAX_SHOWN_BYTES))


# Right after a start systemd does not answer yet ("Failed to connect to bus"): wait for the
# boot to finish, bounded, on images that have systemd; others are ready at once.
BOOTED_ARGV = ["sh", "-c", "command -v systemctl >/dev/null || exit 0; "
               "timeout 120 systemctl is-system-running --wait >/dev/null 2>&1; exit 0"]


@dataclass
class Facts:
    """What one exec of FACTS_SCRIPT found in a container."""

    os_id: str = "unknown"
    package_manager: str = "none"
    users: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    files: dict[str, dict] = field(default_factory=dict)  # path -> {type, mode, uid, gid, sha256, content}
    packages: dict[str, bool] = field(default_factory=dict)
    services: dict[str, dict] = field(default_factory=dict)  # name -> {enabled, running}
    listening: dict[str, list[int]] = field(default_factory=dict)  # service -> wanted ports it holds


def facts_argv(paths: list[str], packages: list[str], services: list[str], manifest: str | None = None,
               listens: dict[str, list[int]] | None = None) -> list[str]:
    ports = [f"{name}/{port}" for name, wanted in sorted((listens or {}).items()) for port in wanted]
    return (["sh", "-c", FACTS_SCRIPT, "reconciler-facts", *(["--manifest", manifest] if manifest else []),
             "--files", *paths, "--packages", *packages, "--services", *services, "--listens", *ports])


def manifest_path(lab: str) -> str:
    """Where apply records the files it manages in a container, to delete those lab.yaml drops."""
    return f"/var/lib/reconciler/{lab}.files"


def manifest_text(lab: str, paths: list[str]) -> str:
    return f"# Files reconciler manages here for lab {lab}; written by apply, do not edit.\n" + \
        "".join(f"{p}\n" for p in sorted(paths))


def recorded_paths(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("/")]


def parse_facts(output: str) -> Facts:
    facts = Facts()
    lines = output.splitlines()
    for i, line in enumerate(lines):
        kind, _, rest = line.partition(" ")
        _PARSERS.get(kind, lambda f, r, nxt: None)(facts, rest, lines[i + 1] if i + 1 < len(lines) else "")
    return facts


def _os(f: Facts, rest: str, _: str) -> None:
    f.os_id = (rest.split() or ["unknown"])[0]


def _pm(f: Facts, rest: str, _: str) -> None:
    f.package_manager = rest.strip()


def _user(f: Facts, rest: str, _: str) -> None:
    name, _, uid = rest.rpartition(" ")
    f.users.setdefault(name, int(uid)) if uid.isdigit() else None


def _group(f: Facts, rest: str, _: str) -> None:
    name, _, gid = rest.rpartition(" ")
    f.groups.setdefault(name, int(gid)) if gid.isdigit() else None


def _dir(f: Facts, rest: str, _: str) -> None:
    mode, uid, gid, path = rest.split(" ", 3)
    f.files[path] = {"type": "directory", "mode": f"{int(mode, 8):04o}", "uid": int(uid), "gid": int(gid)}


def _file(f: Facts, rest: str, _: str) -> None:
    mode, uid, gid, size, digest, path = rest.split(" ", 5)
    f.files[path] = {"type": "file", "mode": f"{int(mode, 8):04o}", "uid": int(uid), "gid": int(gid),
                     "sha256": digest, "size": int(size)}


def _content(f: Facts, rest: str, following: str) -> None:
    if rest in f.files:
        f.files[rest]["content"] = base64.b64decode(following or "")


def _other(f: Facts, rest: str, _: str) -> None:
    f.files[rest] = {"type": "other"}


def _pkg(f: Facts, rest: str, _: str) -> None:
    state, _, name = rest.partition(" ")
    f.packages[name] = state == "installed"


def _svc(f: Facts, rest: str, _: str) -> None:
    enabled, running, name = rest.split(" ", 2)
    f.services[name] = {"enabled": enabled in ("enabled", "static", "alias"), "running": running == "active"}


def _listen(f: Facts, rest: str, _: str) -> None:
    held, port, name = rest.split(" ", 2)
    if held == "yes":
        f.listening.setdefault(name, []).append(int(port))


_PARSERS = {"os": _os, "pm": _pm, "user": _user, "group": _group, "dir": _dir, "file": _file,
            "content": _content, "other": _other, "pkg": _pkg, "svc": _svc,
            "listen": _listen}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- Commands ---------------------------------------------------------------------------

def install_argv(package_manager: str, packages: list[str]) -> list[str]:
    """argv installing packages with the container's own package manager."""
    if package_manager == "apt-get":
        return ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "--", *packages]
    if package_manager in ("dnf", "yum"):
        return [package_manager, "install", "-y", "-q", *packages]
    if package_manager == "apk":
        return ["apk", "add", "-q", *packages]
    raise ValueError("no known package manager (apt-get, dnf, apk) in this container")


def service_argvs(name: str, want: dict, have: dict | None, trigger: str | None) -> list[list[str]]:
    """systemctl commands taking a service from `have` to `want`; `trigger` is reload/restart."""
    have = have or {"enabled": False, "running": False}
    out = []
    if want["enabled"] != have["enabled"]:
        out.append(["systemctl", "enable" if want["enabled"] else "disable", "--quiet", name])
    if want["running"] and not have["running"]:
        out.append(["systemctl", "start", name])
    elif not want["running"] and have["running"]:
        out.append(["systemctl", "stop", name])
    elif want["running"] and trigger:
        out.append(["systemctl", trigger, name])
    return out
