"""`reconcile import`: a lab.yaml for containers built by hand, their profiles and bridges, exactly
as they are, with an `adopt:` section: planning it shows only adoptions (the ownership tag), never a
create, replace or delete.  Pure: LXD's raw JSON in, YAML text out."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import yaml

from .state import OWNER_KEY, devices_of, own_config, referenced_networks

if TYPE_CHECKING:
    from .lxd import RawState


class ImportError_(Exception):
    """What was asked cannot be imported (a name LXD does not have, one another lab owns)."""


def import_lab(raw: RawState, names: list[str], lab_name: str, project: str) -> str:
    instances = _chosen(raw.instances, names)
    profiles = {p["name"]: p for p in raw.profiles}
    networks = {n["name"]: n for n in raw.networks if n.get("managed")}
    lab: dict[str, Any] = {"lab": lab_name, "lxd": {"project": project}}
    owned_profiles = sorted({p for i in instances for p in i.get("profiles") or [] if _importable(profiles.get(p))})
    devices = [dict(i.get("devices") or {}) for i in instances] + [dict(profiles[p].get("devices") or {})
                                                                  for p in owned_profiles]
    used_networks = sorted({n for d in devices for n in referenced_networks(devices_of(d))})
    owned_networks = [n for n in used_networks if _importable(networks.get(n))]
    existing = {"profiles": sorted({p for i in instances for p in i.get("profiles") or []} - set(owned_profiles)),
                "networks": sorted(set(used_networks) - set(owned_networks))}
    lab["existing"] = {k: v for k, v in existing.items() if v or k == "profiles"}
    lab["adopt"] = {k: v for k, v in (("networks", owned_networks), ("profiles", owned_profiles),
                                      ("containers", [i["name"] for i in instances])) if v}
    if owned_networks:
        lab["networks"] = {n: _network(networks[n]) for n in owned_networks}
    if owned_profiles:
        lab["profiles"] = {p: _profile(profiles[p]) for p in owned_profiles}
    lab["containers"] = {i["name"]: _container(i, raw.images) for i in instances}
    head = (f"# Written by `reconcile import` from LXD project {project!r} on"
            f" {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.\n"
            "# `reconcile plan` shows only adoptions (the ownership tag); after `reconcile apply` the lab is\n"
            "# reconciler's, exactly as it was.  Edit it from there.\n")
    return head + yaml.safe_dump(lab, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)


def _chosen(instances: list[dict], names: list[str]) -> list[dict]:
    by_name = {i["name"]: i for i in instances}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ImportError_(f"no instance {', '.join(map(repr, missing))} in this LXD project"
                           f" (there are: {', '.join(sorted(by_name)) or 'none'})")
    chosen = [by_name[n] for n in names] if names else [i for i in instances if _importable(i)]
    taken = [f"{i['name']} (lab {(i.get('config') or {})[OWNER_KEY]!r})" for i in chosen if not _importable(i)]
    if taken:
        raise ImportError_(f"already owned by a lab: {', '.join(taken)}")
    if not chosen:
        raise ImportError_("no instance without a lab's tag in this LXD project: nothing to import")
    return sorted(chosen, key=lambda i: i["name"])


def _importable(obj: Mapping[str, Any] | None) -> bool:
    """Exists, and no lab owns it (the default profile stays LXD's: it is listed under existing)."""
    return obj is not None and OWNER_KEY not in (obj.get("config") or {}) and obj.get("name") != "default"


def _network(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": raw.get("type", "bridge")}
    if raw.get("description"):
        out["description"] = raw["description"]
    config = own_config(raw.get("config") or {})
    if config:
        out["config"] = config
    return out


def _profile(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if raw.get("description"):
        out["description"] = raw["description"]
    for key, value in (("config", own_config(raw.get("config") or {})), ("devices", devices_of(raw.get("devices")))):
        if value:
            out[key] = value
    return out


def _container(raw: Mapping[str, Any], images: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"image": _image(raw, images)}
    if raw.get("type", "container") != "container":
        out["type"] = raw["type"]
    if raw.get("description"):
        out["description"] = raw["description"]
    out["profiles"] = list(raw.get("profiles") or [])
    for key, value in (("config", own_config(raw.get("config") or {})), ("devices", devices_of(raw.get("devices")))):
        if value:
            out[key] = value
    out["state"] = "running" if raw.get("status") == "Running" else "stopped"
    return out


def _image(raw: Mapping[str, Any], images: list[dict]) -> str:
    """The alias of the image it was made from, else that image's fingerprint."""
    fingerprint = (raw.get("config") or {}).get("volatile.base_image", "")
    for image in images:
        if image["fingerprint"] == fingerprint and image.get("aliases"):
            return str(image["aliases"][0]["name"])
    return fingerprint[:16] or "unknown"
