"""Desired x live -> changes.  Pure.

An owned object's config and devices are exactly what lab.yaml says: keys added by hand are
drift.  Replace versus update is decided here, with its reason.
"""

from __future__ import annotations

from typing import Any, Iterable

from .plan import Action, Change, FieldChange
from .state import LabState, Resource

# Container keys LXD documents as "Live update: no": accepted at once, effective after a restart.
RESTART_KEYS = ("raw.lxc", "raw.idmap", "raw.seccomp", "security.privileged", "security.idmap.",
                "security.syscalls.", "security.devlxd", "limits.kernel.", "linux.kernel_modules",
                "nvidia.")
REPLACE_FIELDS = {"instance": ("type", "image"), "network": ("type",)}
LXD_KINDS = ("network", "profile", "instance")


def diff_states(desired: LabState, live: LabState) -> list[Change]:
    """Every change that takes `live` (owned by the lab) to `desired`."""
    changes: list[Change] = []
    for addr in sorted(desired.keys() | live.keys()):
        want, have = desired.get(addr), live.get(addr)
        if have is None:
            changes.append(_create(want))
        elif want is None:
            if have.kind in LXD_KINDS + ("file",):  # files: those an earlier apply recorded
                changes.append(Change(Action.DELETE, addr, have.body, None, reason="not in lab.yaml",
                                      depends_on=have.depends_on))
        elif want.body != have.body:
            changes.extend(_modify(want, have))
    return changes + _service_triggers(desired, changes)


def _create(want: Resource) -> Change:
    reason = "not in LXD" if want.kind in LXD_KINDS else _absent_reason(want)
    return Change(Action.CREATE, want.address, None, want.body, reason=reason, depends_on=want.depends_on)


def _absent_reason(want: Resource) -> str:
    return {"package": "not installed", "file": "absent", "service": "not set up"}.get(want.kind, "absent")


def _modify(want: Resource, have: Resource) -> list[Change]:
    fields = field_changes(have.body, want.body)
    replaced = [f for f in REPLACE_FIELDS.get(want.kind, ()) if want.body.get(f) != have.body.get(f)]
    if replaced:
        why = ", ".join(f"{f} {have.body.get(f)!r} -> {want.body.get(f)!r}" for f in replaced)
        return [Change(Action.REPLACE, want.address, have.body, want.body, fields, f"replace because {why}",
                       want.depends_on)]
    if want.kind == "instance":
        return _instance_changes(want, have, fields)
    shown = [f.path for f in fields if not (f.path == "sha256" and any(g.path == "content" for g in fields))]
    reason = "drift: " + ", ".join(shown)
    return [Change(Action.UPDATE, want.address, have.body, want.body, fields, reason, want.depends_on)]


def _instance_changes(want: Resource, have: Resource, fields: tuple[FieldChange, ...]) -> list[Change]:
    changes = []
    settings = tuple(f for f in fields if f.path != "state")
    if settings:
        changes.append(Change(Action.UPDATE, want.address, have.body, want.body, settings,
                              "drift: " + ", ".join(f.path for f in settings), want.depends_on))
    if want.body["state"] != have.body["state"]:
        action = Action.START if want.body["state"] == "running" else Action.STOP
        changes.append(Change(action, want.address, {"state": have.body["state"]},
                              {"state": want.body["state"]}, (FieldChange("state", have.body["state"],
                                                                          want.body["state"]),),
                              f"is {have.body['state']}, lab.yaml says {want.body['state']}", want.depends_on))
    elif want.body["state"] == "running" and settings:
        needs = restart_needed(have.body, want.body)
        if needs:
            changes.append(Change(Action.RESTART, want.address, None, None,
                                  reason=f"{', '.join(needs)} take effect only after a restart",
                                  depends_on=want.depends_on))
    return changes


def restart_needed(before: dict, after: dict) -> list[str]:
    """The changed settings a running container only picks up when restarted."""
    keys = {k for k in before["config"].keys() | after["config"].keys()
            if before["config"].get(k) != after["config"].get(k) and k.startswith(RESTART_KEYS)}
    nics = {f"devices.{d}" for d in before["devices"].keys() | after["devices"].keys()
            if before["devices"].get(d) != after["devices"].get(d)
            and "nic" in (before["devices"].get(d, {}).get("type"), after["devices"].get(d, {}).get("type"))}
    return sorted(f'config["{k}"]' for k in keys) + sorted(nics)


def _service_triggers(desired: LabState, changes: list[Change]) -> list[Change]:
    """A service reloads or restarts when a file it watches changes, after any other change to it:
    one already running (e.g. started by its package) must still pick the new file up."""
    changed_files = {c.address for c in changes if c.address.startswith("file.")}
    out = []
    for res in desired.values():
        if res.kind != "service" or not res.body.get("running"):
            continue
        container = res.name.split(":", 1)[0]
        hits = [w for w in res.meta.get("watches", []) if f"file.{container}:{w}" in changed_files]
        if hits:
            action = Action.RELOAD if res.meta.get("on_change") == "reload" else Action.RESTART
            out.append(Change(action, res.address, None, None, reason=f"{', '.join(hits)} changed",
                              depends_on=tuple(f"file.{container}:{w}" for w in hits)))
    return out


# --- Field-level detail -------------------------------------------------------------------------

def field_changes(before: dict, after: dict) -> tuple[FieldChange, ...]:
    """Per-field old -> new; lists (profile order) are compared whole.  deepdiff finds the paths."""
    from deepdiff import DeepDiff  # imported only when something differs: a no-op plan stays fast

    tree = DeepDiff(before, after, view="tree", verbose_level=2)
    paths: set[tuple] = set()
    for level_changes in tree.values():
        for level in level_changes:
            paths.add(_whole_lists(level.path(output_format="list")))
    return tuple(FieldChange(display_path(p), _get(before, p), _get(after, p)) for p in sorted(paths, key=str))


def _whole_lists(path: list) -> tuple:
    for i, part in enumerate(path):
        if isinstance(part, int):
            return tuple(path[:i])
    return tuple(path)


_ABSENT = None


def _get(data: Any, path: Iterable) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return _ABSENT
        data = data[part]
    return data


def display_path(path: Iterable) -> str:
    """('config', 'limits.cpu') -> 'config["limits.cpu"]'; ('devices', 'http', 'listen') -> 'devices.http.listen'."""
    out = ""
    for part in path:
        part = str(part)
        if "." in part or not part.replace("-", "_").replace("_", "a").isalnum():
            out += f'["{part}"]'
        else:
            out += f".{part}" if out else part
    return out
