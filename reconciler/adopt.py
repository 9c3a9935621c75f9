"""`reconcile import`: a lab.yaml for containers built by hand, exactly as they are, with an `adopt:`
section: planning it shows only adoptions (the ownership tag), never a create, replace or delete.
Each kind module says what of its kind comes with the chosen containers (`imported`: their profiles,
bridges, pools, volumes, forwards); this module only chooses the containers and puts the parts
together.  Pure: LXD's raw JSON in, YAML text out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import yaml

from .kinds.contract import Chosen, importable
from .state import OWNER_KEY, devices_of

if TYPE_CHECKING:
    from .kinds.contract import ObjectKind
    from .lxd import RawState


class ImportError_(Exception):
    """What was asked cannot be imported (a name LXD does not have, one another lab owns)."""


def import_lab(raw: RawState, names: list[str], lab_name: str, project: str, daemon: str = "LXD") -> str:
    """lab.yaml for these containers (every one no lab owns when none is named) of `project` on `daemon`
    (its title, for the header: LXD or Incus)."""
    from .kinds import INSIDE_KINDS, OBJECT_KINDS  # the registry imports the kind modules, which import contract
    chosen = choose(raw, names)
    lab: dict[str, Any] = {"lab": lab_name, "lxd": {"project": project}, "existing": {}, "adopt": {}}
    for kind in (*OBJECT_KINDS, *INSIDE_KINDS):
        for key, value in kind.imported(raw, chosen).items():
            if key in ("existing", "adopt"):
                lab[key].update(value)
            else:
                lab[key] = value
    head = (f"# Written by `reconcile import` from {daemon} project {project!r} on"
            f" {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.\n"
            "# `reconcile plan` shows only adoptions (the ownership tag); after `reconcile apply` the lab is\n"
            "# reconciler's, exactly as it was.  Edit it from there.\n")
    return head + yaml.safe_dump(lab, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)


def choose(raw: RawState, names: list[str]) -> Chosen:
    """The containers asked for (every one no lab owns when none is named), and their profiles no lab owns."""
    instances = _chosen(raw.instances, names)
    profiles = {p["name"]: p for p in raw.profiles}
    used = sorted({p for i in instances for p in i.get("profiles") or []})
    return Chosen(tuple(instances), tuple(profiles[p] for p in used if importable(profiles.get(p))))


def named_parents(raw: RawState, names: list[str]) -> Callable[[ObjectKind, Mapping[str, Any]], bool]:
    """Which parent objects import reads a nested kind under (a pool's volumes, a bridge's forwards): those
    the chosen containers' devices name, not every one on the server."""
    chosen = choose(raw, names)
    named = {str(v) for i in chosen.instances for d in devices_of(i.get("expanded_devices")).values()
             for v in d.values()} | {str(v) for devices in chosen.devices() for d in devices.values() for v in d.values()}
    return lambda kind, parent: parent.get("name") in named


def _chosen(instances: list[dict], names: list[str]) -> list[dict]:
    by_name = {i["name"]: i for i in instances}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ImportError_(f"no instance {', '.join(map(repr, missing))} in this LXD project"
                           f" (there are: {', '.join(sorted(by_name)) or 'none'})")
    chosen = [by_name[n] for n in names] if names else [i for i in instances if importable(i)]
    taken = [f"{i['name']} (lab {(i.get('config') or {})[OWNER_KEY]!r})" for i in chosen if not importable(i)]
    if taken:
        raise ImportError_(f"already owned by a lab: {', '.join(taken)}")
    if not chosen:
        raise ImportError_("no instance without a lab's tag in this LXD project: nothing to import")
    return sorted(chosen, key=lambda i: i["name"])
