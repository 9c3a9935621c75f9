"""Files and directories inside a container.

A file is written beside its target, checked there when lab.yaml asks (haproxy.cfg by
`haproxy -c`), and renamed over it only then.  Files an earlier apply wrote that lab.yaml no
longer has are deleted (a directory only when empty): apply keeps a record of what it wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..address import Address, Kind, file
from ..facts import MAX_SHOWN_BYTES, Facts
from ..plan import Action, Change
from ..state import Body, Resource

if TYPE_CHECKING:
    from ..lxd import RawState
    from ..provision import FileSpec
    from .contract import Chosen
    from .runner import Runner

KIND = Kind.FILE
RANK = 70  # plan order
SHAPE = ("note", "#ffffff")
ABSENT = "absent"  # why a create: what the plan says of one that is not there
REPLACE_FIELDS: tuple[str, ...] = ("type",)
UNKNOWN = "(known after apply)"
TEMP_SUFFIX = ".reconciler-new"


def deletable(address: Address) -> bool:
    """Those an earlier apply recorded are deleted when lab.yaml drops them."""
    return True


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shown(data: bytes, secret: bool) -> str | None:
    """What a plan may show of a file: its text, or None (binary, large or secret)."""
    if secret or len(data) > MAX_SHOWN_BYTES:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def body(spec: FileSpec, data: bytes | None) -> Body:
    """The desired essence; `data` None means not known before apply (it needs live addresses)."""
    out: Body = {"type": spec.type, "mode": spec.wanted_mode, "owner": spec.owner, "group": spec.group}
    if spec.type == "file":
        if data is None:
            out.update(sha256=UNKNOWN, content=UNKNOWN)
        else:
            out.update(sha256=sha256(data), content=shown(data, spec.secret))
    return out


def found_body(found: Mapping[str, Any], facts: Facts, secret: bool) -> Body:
    """The live essence of one path as the facts script saw it."""
    out: Body = {"type": found["type"], "mode": found.get("mode"), "owner": _name(facts.users, found.get("uid")),
                 "group": _name(facts.groups, found.get("gid"))}
    if found["type"] == "file":
        data = found.get("content")
        out.update(sha256=found["sha256"], content=None if data is None else shown(data, secret))
    return out


def _name(table: Mapping[str, int], number: int | None) -> str:
    for name, value in table.items():
        if value == number:
            return name
    return str(number)


def from_facts(container: str, facts: Facts, secret: Mapping[str, bool]) -> list[Resource]:
    """What is at each wanted path (`secret`: path -> secret?), and at each path the record names."""
    out = []
    for path, is_secret in secret.items():
        found = facts.files.get(path)
        if found:
            out.append(Resource(file(container, path), found_body(found, facts, is_secret)))
    for key in (facts.record or {}):
        path = key.removeprefix("file:")
        if key.startswith("file:/") and path not in secret and facts.files.get(path, {}).get("type") in (
                "file", "directory"):
            out.append(Resource(file(container, path), found_body(facts.files[path], facts, True)))
    return out


# --- applied ----------------------------------------------------------------------------------

def apply(run: Runner, change: Change, action: Action) -> bool:
    """True if the container's file changed."""
    container, path = change.address.name, change.address.key
    if action == Action.DELETE:
        run.check_unmoved(change)
        return delete(run, container, path, (change.before or {}).get("type", "file"))
    if action == Action.CONVERGE and change.after is None:
        return _converge_deleted(run, container, path)
    want = change.after or {}
    if action == Action.UPDATE:
        run.check_unmoved(change)
    if want["type"] == "directory":
        return make_directory(run, container, path, want, action)
    data = run.file_bytes(change)
    if action == Action.CONVERGE and _same(run, container, path, want, data):
        return False
    write(run, container, path, want, data, change.meta.payload.get("check"))
    return True


def _converge_deleted(run: Runner, container: str, path: str) -> bool:
    """A recorded file lab.yaml dropped while its container was stopped: deleted if still there."""
    found = run.read(container, files=(path,)).files.get(path)
    if not found or found.get("type") not in ("file", "directory"):
        return False
    return delete(run, container, path, found["type"])


def _same(run: Runner, container: str, path: str, want: Body, data: bytes) -> bool:
    facts = run.read(container, files=(path,))
    found = facts.files.get(path)
    if not found:
        return False
    now = found_body(found, facts, secret=True)
    return now == {**want, "sha256": sha256(data), "content": None}


def make_directory(run: Runner, container: str, path: str, want: Body, action: Action) -> bool:
    if action == Action.CONVERGE:
        facts = run.read(container, files=(path,))
        if path in facts.files and found_body(facts.files[path], facts, False) == want:
            return False
    uid, gid = run.ids(container, want["owner"], want["group"])
    # "0" + mode: GNU chmod keeps a directory's setgid bit unless given five digits.
    argv = ["sh", "-c", 'mkdir -p -- "$1" && chmod -- "$2" "$1" && chown -- "$3" "$1"', "mkdir",
            path, "0" + want["mode"], f"{uid}:{gid}"]
    run.exec(container, argv, f"creating directory {path}")
    return True


def write(run: Runner, container: str, path: str, want: Body, data: bytes, check: list[str] | None) -> None:
    uid, gid = run.ids(container, want["owner"], want["group"])
    temp = path + TEMP_SUFFIX
    parent = path.rsplit("/", 1)[0] or "/"
    # A temporary file left by a killed run would keep its old mode: LXD sets modes only on new files.
    run.exec(container, ["sh", "-c", 'mkdir -p -- "$1" && rm -f -- "$2"', "prepare", parent, temp],
             f"preparing {path}")
    run.lxd.push_file(container, temp, data, want["mode"], uid, gid)
    if check:
        code, out, err = run.lxd.execute(container, [a.replace("{}", temp) for a in check])
        if code != 0:
            run.lxd.execute(container, ["rm", "-f", "--", temp])
            raise run.step_error(f"{path}: `{' '.join(check)}` rejected the new file (exit {code}); the old one"
                                 " stays live:\n  " + run.last_lines(out, err))
    run.exec(container, ["mv", "-f", "--", temp, path], f"moving {path} into place")


def delete(run: Runner, container: str, path: str, kind: str) -> bool:
    if kind == "directory":  # only if empty: it may hold things that are not the lab's
        run.exec(container, ["sh", "-c", 'rmdir -- "$1" 2>/dev/null || true', "rmdir", path], f"removing {path}")
    else:
        run.exec(container, ["rm", "-f", "--", path], f"removing {path}")
    return True


def imported(raw: RawState, chosen: Chosen) -> dict[str, Any]:
    return {}  # what runs inside a container is not read by import
