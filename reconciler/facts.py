"""What is inside a container, read by ONE exec of a fixed script.  Pure (the exec is lxd.py's).

The paths, packages and services are passed to the script as arguments, never spliced into its
text.  It answers in records of NUL-terminated fields (a tag, then a fixed number of fields per
tag); no value can hold a NUL, so no value can forge a record, whatever it contains.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MAX_SHOWN_BYTES = 256 * 1024  # larger files are compared by digest only
RECORD_DIR = "/var/lib/reconciler"

FACTS_SCRIPT = r"""
set -u
z() { printf '%s\000' "$@"; }
[ -r /etc/os-release ] && . /etc/os-release  # a failed `.` would end a POSIX shell
z os "${ID:-unknown}"
pm=none
for c in apt-get dnf yum apk; do command -v $c >/dev/null 2>&1 && { pm=$c; break; }; done
z pm "$pm"
while IFS=: read -r n _ u _; do z user "$n" "$u"; done </etc/passwd
while IFS=: read -r n _ g _; do z group "$n" "$g"; done </etc/group
ff() {  # PATH SHOW: a file's type, mode, owners, size and digest; its content if SHOW and small
  if [ -d "$1" ]; then set -- "$1" "$2" $(stat -c '%a %u %g' -- "$1"); z dir "$1" "$3" "$4" "$5"
  elif [ -f "$1" ]; then
    set -- "$1" "$2" $(stat -c '%a %u %g %s' -- "$1")
    z file "$1" "$3" "$4" "$5" "$6" "$(sha256sum <"$1" | cut -d' ' -f1)"
    [ "$2" = yes ] && [ "$6" -le MAXBYTES ] && z content "$1" "$(base64 -w0 <"$1")"
  elif [ -e "$1" ] || [ -L "$1" ]; then z other "$1"
  else z absent "$1"; fi
}
mode=
for a in "$@"; do
  case "$a" in --record|--files|--secret-files|--packages|--services|--listens) mode=$a; continue;; esac
  case "$mode" in
  --record)  # what an earlier apply wrote here: "DIGEST KIND:KEY" lines
    if [ -f "$a" ]; then
      z record "$(base64 -w0 <"$a")"
      while IFS= read -r line; do
        k=${line#* }; case "$k" in file:/*) ff "${k#file:}" no;; esac
      done <"$a"
    fi;;
  --files) ff "$a" yes;;
  --secret-files) ff "$a" no;;
  --packages)
    case $pm in
    apt-get) s=$(dpkg-query -W -f='${Status}' -- "$a" 2>/dev/null);;
    dnf|yum) rpm -q -- "$a" >/dev/null 2>&1 && s="install ok installed" || s=;;
    apk) apk info -e -- "$a" >/dev/null 2>&1 && s="install ok installed" || s=;;
    *) s=;;
    esac
    case "$s" in *" installed") z pkg "$a" installed;; *) z pkg "$a" absent;; esac;;
  --services)
    e=$(systemctl is-enabled -- "$a" 2>/dev/null); r=$(systemctl is-active -- "$a" 2>/dev/null)
    z svc "$a" "${e:-unknown}" "${r:-unknown}";;
  --listens)  # SERVICE/PORT: is PORT held by a process of SERVICE's own cgroup?
    n=${a%/*}; p=${a##*/}; cg=$(systemctl show -p ControlGroup --value -- "$n" 2>/dev/null); pids=
    for d in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do
      [ -n "$cg" ] && [ -r "$d$cg/cgroup.procs" ] && { pids=$(cat "$d$cg/cgroup.procs"); break; }
    done
    held=no
    for pid in $pids; do ss -ltnpH "sport = :$p" 2>/dev/null | grep -q "pid=$pid," && { held=yes; break; }; done
    z listen "$n" "$p" "$held";;
  esac
done
z end
exit 0
""".replace("MAXBYTES", str(MAX_SHOWN_BYTES))

# Fields after each tag, in order.
FIELDS = {"os": 1, "pm": 1, "user": 2, "group": 2, "dir": 4, "file": 6, "content": 2, "other": 1,
          "absent": 1, "record": 1, "pkg": 2, "svc": 3, "listen": 3, "end": 0}

# Right after a start systemd does not answer yet ("Failed to connect to bus"): wait for the
# boot to finish, bounded, on images that have systemd; others are ready at once.
BOOTED_ARGV = ["sh", "-c", "command -v systemctl >/dev/null || exit 0; "
               "timeout 120 systemctl is-system-running --wait >/dev/null 2>&1; exit 0"]


class FactsError(ValueError):
    """The facts script's answer is not what it writes: cut short or garbled."""


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
    record: dict[str, str] | None = None  # "file:/etc/x" -> digest last applied; None: no record


def record_path(lab: str) -> str:
    """Where apply records, inside a container, what it last applied there (and so manages)."""
    return f"{RECORD_DIR}/{lab}.applied"


def record_text(lab: str, applied: Mapping[str, str]) -> str:
    return "".join(f"{d} {key}\n" for key, d in sorted(applied.items()))


def parse_record(text: str) -> dict[str, str]:
    out = {}
    for line in text.split("\n"):
        digest_, sep, key = line.partition(" ")
        if sep and key:
            out[key] = digest_
    return out


def facts_argv(files: Iterable[str] = (), secret_files: Iterable[str] = (), packages: Iterable[str] = (),
               services: Iterable[str] = (), record: str | None = None,
               listens: Mapping[str, Iterable[int]] | None = None) -> list[str]:
    ports = [f"{name}/{port}" for name, wanted in sorted((listens or {}).items()) for port in wanted]
    return ["sh", "-c", FACTS_SCRIPT, "reconciler-facts", *(["--record", record] if record else []),
            "--files", *sorted(files), "--secret-files", *sorted(secret_files), "--packages", *packages,
            "--services", *sorted(services), "--listens", *ports]


def parse_facts(output: str) -> Facts:
    """The script's records -> Facts; FactsError if the answer was cut short or is malformed."""
    tokens = output.split("\0")
    if tokens[-1] != "":
        raise FactsError("the answer does not end with a complete field")
    tokens.pop()
    facts, i, ended = Facts(), 0, False
    while i < len(tokens):
        tag = tokens[i]
        if tag not in FIELDS:
            raise FactsError(f"unknown record {tag[:40]!r}")
        values = tokens[i + 1: i + 1 + FIELDS[tag]]
        if len(values) != FIELDS[tag]:
            raise FactsError(f"record {tag!r} is cut short")
        _READERS[tag](facts, values)
        ended = tag == "end"
        i += 1 + FIELDS[tag]
    if not ended:
        raise FactsError("the answer was cut short (no end record)")
    return facts


def _octal(mode: str) -> str:
    return f"{int(mode, 8):04o}"


def _set_os(f: Facts, v: list[str]) -> None:
    f.os_id = v[0]


def _set_pm(f: Facts, v: list[str]) -> None:
    f.package_manager = v[0]


def _user(f: Facts, v: list[str]) -> None:
    if v[1].isdigit():
        f.users.setdefault(v[0], int(v[1]))


def _group(f: Facts, v: list[str]) -> None:
    if v[1].isdigit():
        f.groups.setdefault(v[0], int(v[1]))


def _dir(f: Facts, v: list[str]) -> None:
    f.files[v[0]] = {"type": "directory", "mode": _octal(v[1]), "uid": int(v[2]), "gid": int(v[3])}


def _file(f: Facts, v: list[str]) -> None:
    path, mode, uid, gid, size, sha = v
    f.files[path] = {"type": "file", "mode": _octal(mode), "uid": int(uid), "gid": int(gid),
                     "size": int(size), "sha256": sha}


def _content(f: Facts, v: list[str]) -> None:
    if v[0] in f.files:
        f.files[v[0]]["content"] = base64.b64decode(v[1])


def _other(f: Facts, v: list[str]) -> None:
    f.files[v[0]] = {"type": "other"}


def _absent(f: Facts, v: list[str]) -> None:
    f.files.pop(v[0], None)


def _record(f: Facts, v: list[str]) -> None:
    f.record = parse_record(base64.b64decode(v[0]).decode("utf-8", "replace"))


def _pkg(f: Facts, v: list[str]) -> None:
    f.packages[v[0]] = v[1] == "installed"


def _svc(f: Facts, v: list[str]) -> None:
    f.services[v[0]] = {"enabled": v[1] in ("enabled", "static", "alias"), "running": v[2] == "active"}


def _listen(f: Facts, v: list[str]) -> None:
    if v[2] == "yes" and v[1].isdigit():
        f.listening.setdefault(v[0], []).append(int(v[1]))


def _end(f: Facts, v: list[str]) -> None:
    pass


_READERS = {"os": _set_os, "pm": _set_pm, "user": _user, "group": _group, "dir": _dir, "file": _file,
            "content": _content, "other": _other, "absent": _absent, "record": _record, "pkg": _pkg,
            "svc": _svc, "listen": _listen, "end": _end}
