"""Hostile lab files: each one ends in exit 1 and clear FILE:LINE:COL problems, never a crash,
a hang or exhausted memory.  No LXD.

Every case runs `reconcile validate -f FILE` in a child process limited to 1 GiB of address
space and 20 s of CPU (60 s of wall time); stderr must be only `FILE:LINE:COL: field: message` lines (FILE being
the lab file or its override) and hold the case's expected fragment(s).  The child's wall
time and maximum RSS are recorded (scripts/hostile-report.py prints them per class).

CASES is a module-level list of Case(case_id, klass, content, expected) records, for other
test modules to reuse:
  content   str or bytes written to DIR/lab.yaml, or a function DIR -> the path to pass to -f
            (it may write lab.override.yaml, FIFOs, symlinks...);
  expected  a fragment of stderr, or a tuple of fragments that must all appear.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.source import MAX_BYTES, MAX_DEPTH, MAX_NODES, override_path

MEMORY_LIMIT = 1 << 30  # RLIMIT_AS of each child
CPU_LIMIT = 20  # RLIMIT_CPU of each child, in seconds: the kernel stops runaway work, whatever the load
TIMEOUT = 60.0  # wall time, against a child that waits for something (a read that blocks) instead
LAB = "lab: demo\n"
CHECKOUT = Path(__file__).resolve().parent.parent

Content = str | bytes | Callable[[Path], Path]


class Case(NamedTuple):
    case_id: str
    klass: str
    content: Content
    expected: str | tuple[str, ...]


CASES: list[Case] = []


def case(case_id: str, klass: str, content: Content, expected: str | tuple[str, ...]) -> None:
    CASES.append(Case(case_id, klass, content, expected))


# --- Builders ------------------------------------------------------------------------------

def lab_with_override(lab: str | bytes, make_override: Callable[[Path], None] | str | bytes) -> Callable[[Path], Path]:
    """lab.yaml with `lab`, and lab.override.yaml beside it (content, or made by a function)."""
    def build(directory: Path) -> Path:
        path = directory / "lab.yaml"
        path.write_bytes(lab if isinstance(lab, bytes) else lab.encode())
        over = override_path(path)
        if callable(make_override):
            make_override(over)
        else:
            over.write_bytes(make_override if isinstance(make_override, bytes) else make_override.encode())
        return path
    return build


def special(make: Callable[[Path], None]) -> Callable[[Path], Path]:
    """lab.yaml made by `make` (a FIFO, a symlink, a directory...)."""
    def build(directory: Path) -> Path:
        path = directory / "lab.yaml"
        make(path)
        return path
    return build


def fixed(path: str) -> Callable[[Path], Path]:
    return lambda directory: Path(path)


def fifo(path: Path) -> None:
    os.mkfifo(path)


def symlink_to(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def unix_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))  # the socket file stays after close


def sparse(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with open(path, "wb") as out:
            out.truncate(size)
    return make


def big(size: int, tail: str = "") -> Callable[[Path], Path]:
    """A lab file of exactly `size` bytes: a long string padding it, then `tail`."""
    def build(directory: Path) -> Path:
        head, end = LAB + 'x-pad: "', '"\n' + tail
        path = directory / "lab.yaml"
        path.write_text(head + "p" * (size - len(head) - len(end)) + end)
        return path
    return build


def many_values(size: int) -> Callable[[Path], Path]:
    """Just under `size` bytes of small key-value pairs: more values than the budget."""
    def build(directory: Path) -> Path:
        line_count = (size - 100) // 14
        path = directory / "lab.yaml"
        path.write_text(LAB + "x-many:\n" + "".join(f"  k{i:07d}: v\n" for i in range(line_count)))
        return path
    return build


def laughs(levels: int, width: int, mapping: bool, prefix: str = "") -> str:
    """The billion laughs: each level `width` aliases of the one below."""
    lines = [LAB, f"{prefix}l0: &l0 " + ("{a: lol}" if mapping else "[lol]")]
    for level in range(1, levels):
        items = [f"k{i}: *l{level - 1}" for i in range(width)] if mapping else [f"*l{level - 1}"] * width
        body = "{" + ", ".join(items) + "}" if mapping else "[" + ", ".join(items) + "]"
        lines.append(f"{prefix}l{level}: &l{level} {body}")
    return "\n".join(lines) + "\n"


def nic(value: str) -> str:
    """A device value (an LXD string like every config value) that must name a network."""
    return LAB + f"profiles:\n  p:\n    devices:\n      eth0: {{type: nic, network: {value}}}\n"


def file_mode(value: str) -> str:
    return LAB + f"containers:\n  a:\n    image: x\n    files:\n      /etc/motd: {{content: hi, mode: {value}}}\n"


CONTAINER = LAB + "containers:\n  a:\n    image: x\n"

# --- Encoding --------------------------------------------------------------------------------

case("latin1-value", "encoding", b"lab: caf\xe9\n", "1:9: (top level): not UTF-8: byte 0xe9 at offset 8")
case("ff-first-byte", "encoding", b"\xfflab: demo\n", "1:1: (top level): not UTF-8: byte 0xff at offset 0")
case("truncated-at-eof", "encoding", b"lab: demo\nx-a: \xc3", "2:6: (top level): not UTF-8: byte 0xc3 at offset 15")
case("overlong-slash", "encoding", b"lab: demo\nx-a: \xc0\xaf\n", "not UTF-8: byte 0xc0")
case("utf8-surrogate", "encoding", b"lab: demo\nx-a: \xed\xa0\x80\n", "not UTF-8: byte 0xed")
case("beyond-u10ffff", "encoding", b"lab: demo\nx-a: \xf4\x90\x80\x80\n", "not UTF-8: byte 0xf4")
case("utf16-with-bom", "encoding", "lab: demo\n".encode("utf-16"), "a UTF-16 file?")
case("bom-then-bad-byte", "encoding", b"\xef\xbb\xbflab: \xff\n", "1:6: (top level): not UTF-8: byte 0xff at offset 8")
case("bad-byte-after-multibyte", "encoding", "lab: demo\nx-a: ééé".encode() + b"\x80\n", "2:9: (top level): not UTF-8")

# --- Raw control characters, one per kind ------------------------------------------------------

for name, char in [("nul", "\x00"), ("soh", "\x01"), ("bel", "\x07"), ("backspace", "\x08"), ("vt", "\x0b"),
                   ("ff", "\x0c"), ("esc-terminal", "\x1b[2J"), ("us", "\x1f"), ("del", "\x7f"), ("c1-pad", "\x80"),
                   ("c1-csi", "\x9b"), ("nel-u0085", "\x85"), ("line-sep-u2028", "\u2028"),
                   ("para-sep-u2029", "\u2029"), ("noncharacter-ufffe", "\ufffe")]:
    case(f"control-{name}", "control", f"lab: demo\nx-a: a{char}b\n",
         f"2:7: (top level): the control character U+{ord(char[0]):04X} is not allowed raw")
case("control-lone-cr", "control", "lab: demo\rx-a: b\r", "1:10: (top level): a carriage return without a line feed")
case("control-nul-in-comment", "control", "lab: demo # \x00\n", "1:13: (top level): the control character U+0000")
case("control-in-quotes", "control", 'lab: "de\x07mo"\n', "write it as an escape in double quotes")
case("control-many", "control", "lab: demo\n" + "x: \x00\n" * 50, "more control characters after this")

# --- File types, size ------------------------------------------------------------------------------

case("fifo", "file-type", special(fifo), "is a FIFO (named pipe), not a regular file")
case("fifo-override", "file-type", lab_with_override(LAB, fifo), "lab.override.yaml:1:1: (top level): is a FIFO")
case("symlink-dev-zero", "file-type", special(symlink_to("/dev/zero")), "is a character device, not a regular file")
case("override-symlink-dev-zero", "file-type", lab_with_override(LAB, symlink_to("/dev/zero")),
     "lab.override.yaml:1:1: (top level): is a character device")
case("dev-zero", "file-type", fixed("/dev/zero"), "/dev/zero:1:1: (top level): is a character device")
case("dev-urandom", "file-type", fixed("/dev/urandom"), "is a character device")
case("directory", "file-type", special(lambda p: p.mkdir()), "is a directory, not a regular file")
case("unix-socket", "file-type", special(unix_socket), "is a socket, not a regular file")
case("dangling-symlink", "file-type", special(symlink_to("nowhere.yaml")), "cannot read: No such file or directory")
case("symlink-loop", "file-type", special(symlink_to("lab.yaml")), "cannot read: Too many levels of symbolic links")
case("dangling-override", "file-type", lab_with_override(LAB, symlink_to("nowhere.yaml")),
     "lab.override.yaml:1:1: (top level): cannot read")

case("over-cap-by-one", "size", big(MAX_BYTES + 1), f"is {MAX_BYTES + 1} bytes; the limit is {MAX_BYTES} bytes")
case("ten-mb", "size", big(10_000_000), "is 10000000 bytes; the limit is")
case("sparse-1g", "size", special(sparse(1 << 30)), f"is {1 << 30} bytes; the limit")
case("under-cap-error-at-end", "size", big(MAX_BYTES, "bogus: 1\n"), ":3:1: bogus: unknown field")
case("under-cap-too-many-values", "size", many_values(MAX_BYTES), f"more than {MAX_NODES} values")

# --- Tags ------------------------------------------------------------------------------------------------

for case_id, text, fragment in [
    ("python-apply-os-system", 'lab: !!python/object/apply:os.system ["touch /tmp/pwned"]\n',
     "1:6: lab: unsupported tag !!python/object/apply:os.system"),
    ("python-new", "lab: !!python/object/new:os.system [id]\n", "unsupported tag !!python/object/new:os.system"),
    ("python-name-empty", "lab: demo\nx-a: !!python/name:os.system\n", "2:6: x-a: unsupported tag !!python/name"),
    ("python-module", "lab: demo\nx-a: !!python/module:os ''\n", "unsupported tag !!python/module:os"),
    ("unknown-local-scalar", "lab: !foo demo\n", "1:6: lab: unsupported tag !foo"),
    ("unknown-local-mapping", "lab: demo\ncontainers: !foo {}\n", "2:13: containers: unsupported tag !foo"),
    ("unknown-local-sequence", CONTAINER + "    profiles: !seqish [default]\n", "unsupported tag !seqish"),
    ("binary", "lab: demo\nx-a: !!binary aGVsbG8=\n", "unsupported tag !!binary"),
    ("timestamp", "lab: demo\nx-a: !!timestamp 2001-12-14\n", "unsupported tag !!timestamp"),
    ("set", "lab: demo\nx-a: !!set {a, b}\n", "unsupported tag !!set"),
    ("omap", "lab: demo\nx-a: !!omap [a: 1]\n", "unsupported tag !!omap"),
    ("tag-on-key", "!foo lab: demo\n", "1:1: (top level): unsupported tag !foo"),
    ("python-tag-on-key", "!!python/str lab: demo\n", "unsupported tag !!python/str"),
    ("redefined-secondary-handle", "%TAG !! tag:evil.example,2000:\n---\nlab: !!str demo\n",
     "unsupported tag tag:evil.example,2000:str"),
    ("verbatim-python-none", "lab: !<tag:yaml.org,2002:python/none> x\n", "unsupported tag !!python/none"),
    ("escaped-newline-in-tag", "lab: !<!a%0Ab> x\n", "unsupported tag !a\\nb"),
    ("core-int-not-a-number", "lab: demo\nx-a: !!int abc\n", "2:6: x-a: 'abc' is not a valid !!int value"),
    ("core-float-not-a-number", "lab: demo\nx-a: !!float 1_0\n", "'1_0' is not a valid !!float value"),
    ("core-bool-yes", "lab: demo\nx-a: !!bool yes\n", "'yes' is not a valid !!bool value"),
    ("map-tag-on-sequence", "lab: demo\nx-a: !!map [1]\n", "the tag !!map cannot be on a sequence"),
    ("merge-tag-on-value", "lab: demo\nx-a: !!merge x\n", "!!merge is for the merge key"),
]:
    case(f"tag-{case_id}", "tag", text, fragment)

# --- Keys ------------------------------------------------------------------------------------------------

for case_id, text, fragment in [
    ("flow-sequence", LAB + "[a, b]: 1\n", "2:1: (top level): a key must be a string, not a sequence"),
    ("block-sequence", LAB + "? - a\n  - b\n: 1\n", "a key must be a string, not a sequence"),
    ("flow-mapping", LAB + "{a: 1}: 2\n", "2:1: (top level): a key must be a string, not a mapping"),
    ("alias-to-mapping", LAB + "x-a: &m {b: 1}\n*m : 2\n", "3:1: (top level): a key must be a string, not a mapping"),
    ("empty", LAB + "? \n: 1\n", "a key cannot be empty"),
    ("null-word", LAB + "null: 1\n", "2:1: null: unknown field"),
    ("tilde", LAB + "~: 1\n", '2:1: ["~"]: unknown field'),
    ("yes", LAB + "yes: 1\n", "2:1: yes: unknown field"),
    ("on-in-container", CONTAINER + "    on: 1\n", "5:5: containers.a.on: unknown field"),
    ("true", LAB + "true: 1\n", "2:1: true: unknown field"),
    ("duplicate", "lab: a\nlab: b\n", "2:1: lab: duplicate key (first defined at line 1)"),
    ("newline-escape", LAB + '"a\\nb": 1\n', '2:1: ["a\\nb"]: unknown field'),
    ("terminal-escape", LAB + '"\\e[31mred": 1\n', '2:1: ["\\x1b[31mred"]: unknown field'),
    ("too-long-implicit", LAB + "k" * 2000 + ": 1\n", "invalid YAML"),
]:
    case(f"key-{case_id}", "key", text, fragment)

# --- Merge keys ---------------------------------------------------------------------------------------

for case_id, text, fragment in [
    ("scalar", CONTAINER + "    <<: x\n", '5:9: containers.a["<<"]: `<<` (a merge key) takes a mapping or a list'),
    ("alias-to-scalar", LAB + "x-s: &s x\ncontainers:\n  a: {image: x, <<: *s}\n", "`<<` (a merge key) takes"),
    ("null", CONTAINER + "    <<:\n", "`<<` (a merge key) takes"),
    ("list-with-scalar", LAB + "x-c: &c {image: x}\ncontainers:\n  a: {<<: [*c, oops]}\n",
     '4:16: containers.a["<<"][1]: `<<` merges mappings, and this is a scalar'),
    ("list-with-list", LAB + "x-c: &c {image: x}\ncontainers:\n  a: {<<: [*c, [y]]}\n", "and this is a sequence"),
    ("two-merge-keys", LAB + "x-c: &c {image: x}\ncontainers:\n  a: {<<: *c, <<: *c}\n",
     'containers.a["<<"]: duplicate key (first defined at line 4)'),
    ("explicit-duplicate-beside-merge", LAB + "x-c: &c {image: x}\ncontainers:\n  a: {<<: *c, image: y, image: z}\n",
     "containers.a.image: duplicate key (first defined at line 4)"),
    ("override-of-merged-key-is-used", LAB + "x-c: &c {image: x}\ncontainers:\n  a: {<<: *c, image: 'bad:img'}\n",
     "4:22: containers.a.image: unknown image remote 'bad'"),
    ("merge-itself", LAB + "x-a: &a {<<: *a}\n", "the alias *a is inside its own anchor &a"),
]:
    case(f"merge-{case_id}", "merge", text, fragment)

# --- Depth -------------------------------------------------------------------------------------------------

DEEP = 3000
case("flow-sequences", "depth", LAB + "x-a: " + "[" * DEEP + "]" * DEEP + "\n", "nest")
case("flow-mappings", "depth", LAB + "x-a: " + "{a: " * DEEP + "b" + "}" * DEEP + "\n", "nest")
case("block-sequences", "depth", LAB + "x-a:\n" + "- " * DEEP + "x\n", f"nested more than {MAX_DEPTH} levels deep")
case("block-mappings", "depth", LAB + "x-a:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(1500)),
     f"nested more than {MAX_DEPTH} levels deep")
# The top-level mapping is level 1: x-a's 64th sequence is level 65, at x-a plus 63 steps.
case("just-over-limit", "depth", LAB + "x-a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n",
     f"2:{6 + MAX_DEPTH - 1}: x-a{'[0]' * (MAX_DEPTH - 1)}: nested more than {MAX_DEPTH} levels deep")
case("deep-then-alias", "depth", LAB + "x-a: " + "[" * 100 + "&z x" + "]" * 100 + "\nx-b: *z\n", "nested more than")
case("deep-under-an-anchor", "depth", LAB + "x-a: &d " + "[" * 100 + "]" * 100 + "\nx-b: [*d, *d]\n", "not read further")

# --- Aliases -----------------------------------------------------------------------------------------------

case("billion-laughs-sequences", "alias", laughs(10, 10, mapping=False), f"more than {MAX_NODES} values")
case("billion-laughs-mappings", "alias", laughs(10, 10, mapping=True), f"more than {MAX_NODES} values")
case("unused-bomb-under-x", "alias", laughs(10, 10, mapping=False, prefix="x-"), "an alias bomb?")
case("quadratic", "alias", LAB + "x-a: &a [" + ", ".join(["x"] * 1000) + "]\nx-b: [" + ", ".join(["*a"] * 1000) + "]\n",
     "an alias bomb?")
case("merge-bomb", "alias", LAB + "x-a: &a {" + ", ".join(f"k{i}: x" for i in range(500)) + "}\n"
     + "".join(f"x-m{i}: {{<<: *a}}\n" for i in range(1000)), "an alias bomb?")
case("recursive-sequence", "alias", LAB + "x-a: &a [*a]\n", "2:10: x-a[0]: the alias *a is inside its own anchor &a")
case("recursive-mapping", "alias", LAB + "x-a: &a {b: {c: [*a]}}\n", "the alias *a is inside its own anchor")
case("recursive-root", "alias", "&r {lab: demo, x-a: *r}\n", "the alias *r is inside its own anchor")
case("undefined", "alias", LAB + "x-a: *nope\n", "2:6: x-a: undefined alias *nope")

# --- YAML 1.1 readings that YAML 1.2 does not make -------------------------------------------------------

for text in ["010", "0o10", "1.10", "12:30", "1:20:30", "yes", "no", "on", "off", "y", "n", "0b101", "1_000",
             "2001-01-01", "0x1F", "+12", ".5", "1e3"]:
    case(f"value-{text}", "yaml11", nic(text), f"unknown network '{text}'")
case("value-null-word", "yaml11", nic("Null"), "needs a value")
case("mode-0644", "yaml11", file_mode("0644"), 'mode must be a string: quote it: mode: "0644"')
case("mode-0755", "yaml11", file_mode("0755"), 'quote it: mode: "0755"')
case("mode-0o644", "yaml11", file_mode("0o644"), 'quote it: mode: "0o644"')
case("number-for-a-string", "yaml11", "lab: 010\n", '1:6: lab: Input should be a valid string; quote it: "010"')
case("number-in-a-string-list", "yaml11", CONTAINER + "    packages: [1.10]\n", 'quote it: "1.10"')
case("key-80", "yaml11", LAB + "80: x\n", "2:1: 80: unknown field")
case("key-off", "yaml11", LAB + "off: x\n", "2:1: off: unknown field")
case("keys-yes-and-on-are-distinct", "yaml11", LAB + "yes: 1\non: 2\n", ("2:1: yes: unknown field", "3:1: on: unknown field"))
case("device-named-on", "yaml11", LAB + "profiles:\n  p:\n    devices:\n      on: {type: nic, network: nope}\n",
     "profiles.p.devices.on.network: unknown network 'nope'")

# --- Both files bad ---------------------------------------------------------------------------------------

case("syntax-and-nul", "override", lab_with_override("lab: [demo\n", "x-a: \x00\n"),
     ("lab.yaml:2:1: (top level): invalid YAML", "lab.override.yaml:1:6: (top level): the control character U+0000"))
case("encoding-and-duplicate", "override", lab_with_override(b"lab: \xff\n", "x-a: 1\nx-a: 2\n"),
     ("lab.yaml:1:6: (top level): not UTF-8", "lab.override.yaml:2:1: x-a: duplicate key"))
case("tag-and-fifo", "override", lab_with_override("lab: !!python/none x\n", fifo),
     ("lab.yaml:1:6: lab: unsupported tag", "lab.override.yaml:1:1: (top level): is a FIFO"))
case("bomb-and-not-a-mapping", "override", lab_with_override(laughs(10, 10, mapping=False), "- a list\n"),
     ("lab.yaml:", "an alias bomb?", "lab.override.yaml:1:1: (top level): the top level must be a mapping"))
case("both-oversize", "override", lab_with_override(b"#" * (MAX_BYTES + 1), b"#" * (MAX_BYTES + 2)),
     (f"lab.yaml:1:1: (top level): is {MAX_BYTES + 1} bytes", f"lab.override.yaml:1:1: (top level): is {MAX_BYTES + 2}"))

# --- The document as a whole -------------------------------------------------------------------------------

case("top-level-list", "document", "- lab: demo\n", "1:1: (top level): the top level must be a mapping")
case("top-level-scalar", "document", "hello\n", "the top level must be a mapping")
case("top-level-null", "document", "~\n", "the top level must be a mapping")
case("two-documents", "document", "lab: demo\n---\nlab: other\n", "2:1: (top level): a second YAML document")
case("unclosed-quote", "document", 'lab: "demo\n', "invalid YAML")
case("tab-indentation", "document", "lab: demo\nx-a:\n\tb: 1\n", "invalid YAML")
case("huge-integer", "document", LAB + "x-a: " + "9" * 5000 + "\n", "a number of more than 4300 digits is too long")
case("huge-tagged-integer", "document", LAB + "x-a: !!int " + "9" * 5000 + "\n", "is too long")
case("many-unknown-fields", "document", LAB + "".join(f"k{i}: 1\n" for i in range(90_000)),
     "89000 more problems from here on are not shown")
case("many-duplicate-keys", "document", LAB + "x-a:\n" + "  a: 1\n" * 90_000, "more problems from here on are not shown")

# --- ${VAR} interpolation ----------------------------------------------------------------------------------

case("malformed", "interpolation", "lab: ${demo\n", "1:6: lab: malformed variable reference '${demo'")
case("unset", "interpolation", "lab: ${RECONCILER_HOSTILE_UNSET}\n", "environment variable RECONCILER_HOSTILE_UNSET")
case("long-malformed", "interpolation", "lab: demo\nx-a: ${" + "a" * 1_000_000 + "\n", "...'")
case("malformed-to-the-cap", "interpolation", LAB + 'x-a: "' + "${}" * ((MAX_BYTES - 40) // 3) + '"\n',
     "2:6: x-a: malformed variable reference '${}'")
case("unset-many-names", "interpolation", LAB + 'x-a: "' + "".join(f"${{V{i}}}" for i in range(350_000)) + '"\n',
     "2:6: x-a: 349990 more variable problems in this value")
case("unset-under-many-aliases", "interpolation", LAB + 'x-a: &a "${NOPE}"\nx-b: [' + ", ".join(["*a"] * 50_000) + "]\n",
     "2:6: x-a: environment variable NOPE is not set")


# --- Running a case ------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    path: Path  # as given to -f
    code: int | None  # None: killed at the timeout
    stderr: str
    stdout: str
    seconds: float  # wall time
    max_rss_kib: int
    cpu_seconds: float | None  # user + system


# A small process that has imported `reconcile` once and forks a fresh child per case: each case still
# runs in a process of its own, its address space limited before it reads the file, and costs no
# interpreter start (154 starts were most of this module's time).  One JSON line per case in; one out:
# the child's exit status (None when killed at TIMEOUT), wall time, maximum RSS and CPU time (wait4 on the
# child alone).
FORK_SERVER = f"""
import json, os, resource, signal, sys, time
from reconciler.cli import main
import reconciler.spec  # the models, built before any fork
for line in sys.stdin:
    case = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.chdir(case["cwd"])
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(case["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(case["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        for fd, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
        resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))
        resource.setrlimit(resource.RLIMIT_CPU, ({CPU_LIMIT}, {CPU_LIMIT}))
        code = 1
        try:
            code = main(case["argv"])
        except SystemExit as stopped:
            code = stopped.code if isinstance(stopped.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    start, killed = time.monotonic(), []
    def stop(signum, frame):  # the wall timeout: the kernel's timer, then the child's whole session
        os.killpg(pid, signal.SIGKILL)
        killed.append(True)
    signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, {TIMEOUT})
    _, status, usage = os.wait4(pid, 0)  # woken by the child's end (or its kill)
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(json.dumps({{"code": None if killed else os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - start,
                      "max_rss_kib": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime}}), flush=True)
"""


class ForkServer:
    def __init__(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": str(CHECKOUT)}  # this checkout's reconciler, whatever the environment has installed
        self.proc = subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True, cwd="/")

    def run(self, argv: list[str], cwd: Path, out: Path, err: Path) -> dict:
        """The child's report; the server kills it (code None) after TIMEOUT of wall time."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "out": str(out), "err": str(err)}) + "\n")
        self.proc.stdin.flush()
        report = json.loads(self.proc.stdout.readline())
        if report["code"] == -signal.SIGXCPU:  # over CPU_LIMIT: the kernel stopped it
            report["code"] = None
        return report


_server: ForkServer | None = None


def run_case(item: Case, directory: Path) -> Outcome:
    """Make the case's file(s) in `directory` and run `reconcile validate -f` on it in a bounded child."""
    global _server
    if callable(item.content):
        path = item.content(directory)
    else:
        path = directory / "lab.yaml"
        path.write_bytes(item.content if isinstance(item.content, bytes) else item.content.encode())
    out, err = directory / "child.stdout", directory / "child.stderr"
    if _server is None or _server.proc.poll() is not None:
        _server = ForkServer()
    report = _server.run(["validate", "-f", str(path)], directory, out, err)
    return Outcome(path, report["code"], err.read_text(errors="replace"), out.read_text(errors="replace"),
                   report["seconds"], report["max_rss_kib"], report["cpu"])


def failures(item: Case, outcome: Outcome) -> list[str]:
    """What is wrong with a case's outcome; empty when it ended as it must."""
    found = []
    if outcome.code is None:
        found.append(f"killed: over {CPU_LIMIT} s of CPU or {TIMEOUT:.0f} s of wall time")
    elif outcome.code != 1:
        found.append(f"exit code {outcome.code}, not 1")
    if "Traceback" in outcome.stderr:
        found.append("a traceback")
    files = "|".join(re.escape(str(p)) for p in (outcome.path, override_path(outcome.path)))
    line = re.compile(rf"^(?:{files}):\d+:\d+: .+: .+$")
    lines = outcome.stderr.splitlines()
    if not lines:
        found.append("nothing on stderr")
    found += [f"not FILE:LINE:COL: field: message: {text[:200]!r}" for text in lines if not line.match(text)]
    for fragment in (item.expected,) if isinstance(item.expected, str) else item.expected:
        if fragment not in outcome.stderr:
            found.append(f"{fragment!r} not in stderr")
    return found


TIMES: dict[str, tuple[float, int]] = {}  # case_id -> (wall seconds, max RSS KiB)


# Beyond the loader: a profile's proxy port range shared by 20 000 containers (20 million ports if
# counted one by one) is checked as intervals, in bounded time and memory.
CASES.append(
    Case("proxy-port-ranges-shared-by-many-containers", "schema",
         LAB + "profiles:\n  p:\n    devices:\n      root: {type: disk, path: /, pool: default}\n"
         '      h: {type: proxy, listen: "tcp:127.0.0.1:1-1024", connect: "tcp:127.0.0.1:80"}\ncontainers:\n'
         + "".join(f"  c{i}: {{image: x, profiles: [p]}}\n" for i in range(20_000)),
         "clashes with the listen address of"))
# 5000 servers that are not lab containers, half of them host names, among 3000 containers: a "did you
# mean" compares a name with every container's, so only so many are searched (it took 25 s when all were).
CASES.append(
    Case("unknown-servers-among-many-containers", "schema",
         LAB + "containers:\n" + "".join(f"  c{i}: {{image: x}}\n" for i in range(3000))
         + "haproxy:\n  c0:\n    frontends: {f: {bind: '*:80', default_backend: b}}\n    backends:\n      b:\n"
         "        servers:\n" + "".join(f"          - {{container: x{i}.nowhere.org}}\n          - {{container: y{i}}}\n"
                                     for i in range(2500)),
         ("'x0.nowhere.org' is not an LXD container name", "'y0' is not a lab container")))


CPU_BOUND = 10.0  # seconds of CPU per case


@pytest.mark.parametrize("item", CASES, ids=[c.case_id for c in CASES])
def test_a_hostile_file_ends_in_clear_problems(item: Case, tmp_path: Path):
    outcome = run_case(item, tmp_path)
    TIMES[item.case_id] = (outcome.seconds, outcome.max_rss_kib)
    wrong = failures(item, outcome)
    assert not wrong, f"{wrong}\nstderr:\n{outcome.stderr[:3000]}"
    # CPU time, not wall time: other work on the machine must not fail the test (the wall clock
    # is bounded by TIMEOUT above). A bound against runaway work, not a speed goal: the slowest case
    # (90,000 unknown fields) takes about 3.5 s alone and more with test workers beside it.
    if outcome.cpu_seconds is not None:
        assert outcome.cpu_seconds < CPU_BOUND, f"took {outcome.cpu_seconds:.1f}s of CPU"
    assert outcome.max_rss_kib < 512 * 1024, f"max RSS {outcome.max_rss_kib // 1024} MiB"


def test_the_corpus_covers_every_class_with_enough_cases():
    classes = {c.klass for c in CASES}
    assert {"encoding", "control", "file-type", "size", "tag", "key", "merge", "depth", "alias", "yaml11",
            "override", "document", "interpolation"} <= classes
    assert len(CASES) >= 45
    assert len({c.case_id for c in CASES}) == len(CASES), "case ids must be unique"
