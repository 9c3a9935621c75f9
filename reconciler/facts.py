"""What is inside a container, read by ONE exec of a fixed script.  Pure (the exec is lxd.py's).

The paths, packages and services are passed to the script as arguments, never spliced into its
text.  It answers in records of NUL-terminated fields (a tag, then a fixed number of fields per
tag); no value can hold a NUL, so no value can forge a record, whatever it contains.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MAX_SHOWN_BYTES = 256 * 1024  # larger files are compared by digest only
RECORD_DIR = "/var/lib/reconciler"

FACTS_SCRIPT = r"""
set -u -f
z() { printf '%s\000' "$@"; }
[ -r /etc/os-release ] && . /etc/os-release  # a failed `.` would end a POSIX shell
z os "${ID:-unknown}"
pm=none
for c in apt-get dnf yum apk; do command -v $c >/dev/null 2>&1 && { pm=$c; break; }; done
z pm "$pm"
while IFS=: read -r n _ u _; do z user "$n" "$u"; done </etc/passwd
while IFS=: read -r n _ g _; do z group "$n" "$g"; done </etc/group
record=$1 pkgs=$2 svcs=$3 listens=$4 sock=$5 client=$6 rtcmd=$7
shift 7
if [ -n "$sock" ]; then  # HAProxy's runtime state, through its admin socket (the drain's perl client)
  to=; command -v timeout >/dev/null 2>&1 && to="timeout 10"
  if [ ! -S "$sock" ]; then z noruntime "no admin socket at $sock"
  elif ! command -v perl >/dev/null 2>&1; then z noruntime "no perl to ask $sock"
  elif rt=$($to perl -e "$client" "$sock" "$rtcmd" 2>&1); then z runtime "$rt"
  else z noruntime "${rt:-asking $sock failed}"
  fi
fi
if [ -n "$record" ] && [ -f "$record" ]; then  # files an earlier apply wrote: lab.yaml may have dropped some
  z record "$(base64 -w0 <"$record")"
  while IFS= read -r line; do
    k=${line#* }
    case "$k" in file:/*)
      known=no
      for a; do [ "$a" = "${k#file:}" ] && { known=yes; break; }; done
      [ $known = yes ] || set -- "$@" "${k#file:}";;
    esac
  done <"$record"
fi
# A name holding a newline would split the tools' line-based answers: it is never passed to them.
n=$#
for p; do case "$p" in *"
"*) z other "$p";; *) set -- "$@" "$p";; esac; done
shift $n
# Each tool once for all the paths (a fork per file is what made this slow).
for p; do if [ -e "$p" ]; then :; elif [ -L "$p" ]; then z other "$p"; else z absent "$p"; fi; done
[ $# -gt 0 ] && z stat "$(stat -L -c '%F|%a|%u|%g|%s|%n' -- "$@" 2>/dev/null)"
n=$#
for p; do [ -f "$p" ] && set -- "$@" "$p"; done  # regular files only: never read a FIFO
shift $n
[ $# -gt 0 ] && z sum "$(sha256sum -- "$@" 2>/dev/null)"
if [ -n "$pkgs" ]; then
  z pkgs "$pkgs"
  case $pm in
  apt-get) z dpkg "$(dpkg-query -W -f='${Package} ${Status}\n' -- $pkgs 2>/dev/null)";;
  dnf|yum) z rpm "$(rpm -q --qf '%{NAME}\n' -- $pkgs 2>/dev/null)";;
  apk) z apk "$(apk info -e -- $pkgs 2>/dev/null)";;
  esac
fi
command -v systemctl >/dev/null 2>&1 || svcs= listens=
[ -n "$svcs" ] && z units "$svcs" "$(systemctl show -p UnitFileState,ActiveState -- $svcs 2>/dev/null)"
if [ -n "$listens" ]; then  # SERVICE/PORT: is PORT held by a process of SERVICE's own cgroup?
  z listens "$listens" "$(ss -ltnpH 2>/dev/null)"
  done_=
  for l in $listens; do
    s=${l%/*}
    case " $done_ " in *" $s "*) continue;; esac
    done_="$done_ $s"; cg=$(systemctl show -p ControlGroup --value -- "$s" 2>/dev/null); pids=
    for d in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do
      [ -n "$cg" ] && [ -r "$d$cg/cgroup.procs" ] && { while read -r i; do pids="$pids $i"; done <"$d$cg/cgroup.procs"; break; }
    done
    z procs "$s" "$pids"
  done
fi
z end
exit 0
"""

CONTENT_SCRIPT = r"""
set -u
z() { printf '%s\000' "$@"; }
for p; do [ -f "$p" ] && z content "$p" "$(base64 -w0 <"$p")"; done
z end
exit 0
"""

# Fields after each tag, in order.
FIELDS = {"os": 1, "pm": 1, "user": 2, "group": 2, "other": 1, "absent": 1, "record": 1, "stat": 1, "sum": 1,
          "pkgs": 1, "dpkg": 1, "rpm": 1, "apk": 1, "units": 2, "listens": 2, "procs": 2, "content": 2, "runtime": 1,
          "noruntime": 1, "end": 0}

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
    runtime: str | None = None  # what HAProxy's admin socket answered (`show servers state`), if asked
    no_runtime: str = ""  # why it could not be asked (no socket: HAProxy is down)


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
               listens: Mapping[str, Iterable[int]] | None = None,
               runtime: tuple[str, str, str] | None = None) -> list[str]:
    """The facts exec's argv: the lists of names travel as single words (names hold no spaces: validated),
    the paths as arguments of their own; `runtime` is (perl client, admin socket, command), as
    haproxy/runtime.py's client_argv checked and built them."""
    ports = [f"{name}/{port}" for name, wanted in sorted((listens or {}).items()) for port in wanted]
    client, sock, command = runtime or ("", "", "")
    return ["sh", "-c", FACTS_SCRIPT, "reconciler-facts", record or "", " ".join(packages),
            " ".join(sorted(services)), " ".join(ports), sock, client, command,
            *sorted(set(files) | set(secret_files))]


def content_argv(paths: Iterable[str]) -> list[str]:
    """Reading the content of files whose digest differs from lab.yaml's, to show the difference."""
    return ["sh", "-c", CONTENT_SCRIPT, "reconciler-content", *sorted(paths)]


def parse_facts(output: str, into: Facts | None = None) -> Facts:
    """The script's records -> Facts; FactsError if the answer was cut short or is malformed."""
    tokens = output.split("\0")
    if tokens[-1] != "":
        raise FactsError("the answer does not end with a complete field")
    tokens.pop()
    facts, raw, i, ended = into or Facts(), _Raw(), 0, False
    while i < len(tokens):
        tag = tokens[i]
        if tag not in FIELDS:
            raise FactsError(f"unknown record {tag[:40]!r}")
        values = tokens[i + 1: i + 1 + FIELDS[tag]]
        if len(values) != FIELDS[tag]:
            raise FactsError(f"record {tag!r} is cut short")
        raw.take(facts, tag, values)
        ended = tag == "end"
        i += 1 + FIELDS[tag]
    if not ended:
        raise FactsError("the answer was cut short (no end record)")
    raw.settle(facts)
    return facts


@dataclass
class _Raw:
    """The tools' own outputs, read into Facts once the whole answer is in."""

    stat: str = ""
    sums: str = ""
    asked_packages: list[str] = field(default_factory=list)
    installed: dict[str, set[str]] = field(default_factory=dict)  # tool -> names it says are installed
    units: tuple[list[str], str] = ([], "")
    listens: tuple[list[str], str] = ([], "")
    procs: dict[str, set[str]] = field(default_factory=dict)

    def take(self, facts: Facts, tag: str, v: list[str]) -> None:
        if tag in _READERS:
            _READERS[tag](facts, v)
        elif tag == "stat":
            self.stat = v[0]
        elif tag == "sum":
            self.sums = v[0]
        elif tag == "pkgs":
            self.asked_packages = v[0].split()
        elif tag in ("dpkg", "rpm", "apk"):
            self.installed[tag] = _installed(tag, v[0])
        elif tag == "units":
            self.units = (v[0].split(), v[1])
        elif tag == "listens":
            self.listens = (v[0].split(), v[1])
        elif tag == "procs":
            self.procs[v[0]] = set(v[1].split())

    def settle(self, facts: Facts) -> None:
        sums = _sums(self.sums)
        for line in self.stat.split("\n"):
            _stat_line(facts, line, sums)
        names = set().union(*self.installed.values()) if self.installed else set()
        for name in self.asked_packages:
            facts.packages[name] = name.split(":")[0] in names
        for name, block in zip(self.units[0], _blocks(self.units[1])):
            facts.services[name] = {"enabled": block.get("UnitFileState") in ("enabled", "static", "alias"),
                                    "running": block.get("ActiveState") == "active"}
        held = _held_ports(self.listens[1])
        for item in self.listens[0]:
            name, _, port = item.rpartition("/")
            if port.isdigit() and held.get(int(port), set()) & self.procs.get(name, set()):
                facts.listening.setdefault(name, []).append(int(port))


def _stat_line(facts: Facts, line: str, sums: Mapping[str, str]) -> None:
    parts = line.split("|", 5)
    if len(parts) != 6 or not all(x.isdigit() for x in parts[1:5] if x):
        return
    kind, mode, uid, gid, size, path = parts
    if kind in ("regular file", "regular empty file"):
        if path in sums:
            facts.files[path] = {"type": "file", "mode": _octal(mode), "uid": int(uid), "gid": int(gid),
                                 "size": int(size), "sha256": sums[path]}
        else:
            facts.files[path] = {"type": "other"}  # a file it could not read
    elif kind == "directory":
        facts.files[path] = {"type": "directory", "mode": _octal(mode), "uid": int(uid), "gid": int(gid)}
    else:
        facts.files[path] = {"type": "other"}


def _sums(text: str) -> dict[str, str]:
    """sha256sum's lines -> path: digest (GNU escapes a name holding a backslash, CR or newline)."""
    out = {}
    for line in text.split("\n"):
        escaped = line.startswith("\\")
        digest_, sep, name = line.removeprefix("\\").partition("  ")
        if sep and len(digest_) == 64:
            out[_unescaped(name) if escaped else name] = digest_
    return out


def _unescaped(name: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), name)


def _installed(tool: str, text: str) -> set[str]:
    lines = [line.split() for line in text.split("\n") if line.strip()]
    if tool == "dpkg":
        return {w[0] for w in lines if len(w) >= 4 and w[-1] == "installed" and w[-2] == "ok"}
    if tool == "rpm":
        return {w[0] for w in lines if len(w) == 1}  # "package X is not installed" has more words
    return {w[0] for w in lines}


def _blocks(text: str) -> list[dict[str, str]]:
    """systemctl show's output: one block of KEY=VALUE lines per unit, blank lines between."""
    out: list[dict[str, str]] = []
    for chunk in text.split("\n\n"):
        out.append(dict(line.split("=", 1) for line in chunk.split("\n") if "=" in line))
    return out


def _held_ports(ss: str) -> dict[int, set[str]]:
    """`ss -ltnpH`: port -> the pids listening on it."""
    out: dict[int, set[str]] = {}
    for line in ss.split("\n"):
        words = line.split()
        if len(words) < 4:
            continue
        port = words[3].rpartition(":")[2]
        if port.isdigit():
            out.setdefault(int(port), set()).update(re.findall(r"pid=(\d+)", line))
    return out


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


def _content(f: Facts, v: list[str]) -> None:
    if v[0] in f.files:
        f.files[v[0]]["content"] = base64.b64decode(v[1])


def _other(f: Facts, v: list[str]) -> None:
    f.files[v[0]] = {"type": "other"}


def _absent(f: Facts, v: list[str]) -> None:
    f.files.pop(v[0], None)


def _record(f: Facts, v: list[str]) -> None:
    f.record = parse_record(base64.b64decode(v[0]).decode("utf-8", "replace"))


def _runtime(f: Facts, v: list[str]) -> None:
    f.runtime = v[0]


def _no_runtime(f: Facts, v: list[str]) -> None:
    f.no_runtime = v[0].strip()[-300:]


def _end(f: Facts, v: list[str]) -> None:
    pass


_READERS = {"os": _set_os, "pm": _set_pm, "user": _user, "group": _group, "content": _content, "other": _other,
            "absent": _absent, "record": _record, "runtime": _runtime, "noruntime": _no_runtime, "end": _end}
