"""LXD network ACLs the lab owns: compared rule by rule, created before what names them, deleted after.

The rules are kept in the body keyed by their place in lab.yaml ("0", "1", ...), so a plan shows a
field diff per rule (`ingress.1.destination_port: "8080" -> "80"`), not "rules changed".  LXD
ignores the order of rules (it sorts them by action), so the live rules are first matched to
lab.yaml's (`align`): a rule that is there, wherever it is, takes its key; a rule changed by hand
takes the key of the one it replaced; a rule added by hand comes after lab.yaml's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..address import Address, Kind, acl
from ..errors import StaleState
from ..network_acl import lxd_rule
from ..plan import Action, Change
from ..state import APPLIED_KEY, OWNER_KEY, Body, Resource, digest, nic_acls, own_config
from .contract import Scope, Wanted

if TYPE_CHECKING:
    from ..lxd import RawState
    from ..spec import Lab
    from .contract import Chosen, LabTable
    from .runner import Runner

KIND = Kind.ACL
RANK = 10  # plan order
SHAPE = ("octagon", "#f4cccc")
ABSENT = "not in {daemon}"  # why a create: what the plan says of one that is not there
COLLECTION = "network-acls"
PARENT: Kind | None = None
SCOPE = Scope.SHARED
TABLE = "acls"
LAB_TABLE: LabTable | None = None  # a core table: spec.models has its model
NOUN = "network ACL"
API_EXTENSION = "network_acl"  # what it needs in GET /1.0's api_extensions ("": the core API)
DEEP_READ = False
REPLACE_FIELDS: tuple[str, ...] = ()
DIRECTIONS = ("ingress", "egress")

Rules = dict[str, dict[str, str]]



def deletable(address: Address) -> bool:
    return True  # what lab.yaml no longer has is deleted

def keyed(rules: list[dict[str, str]]) -> Rules:
    return {str(i): rule for i, rule in enumerate(rules)}


def in_order(rules: Rules) -> list[dict[str, str]]:
    return [rules[k] for k in sorted(rules, key=int)]


def desired(lab: Lab, wanted: Wanted) -> list[Resource]:
    return [Resource(acl(name), {"description": spec.description, "config": {},
                                 **{d: keyed([lxd_rule(r) for r in getattr(spec, d)]) for d in DIRECTIONS}})
            for name, spec in lab.acls.items()]


def from_lxd(raw: Mapping[str, Any]) -> Resource:
    config = raw.get("config") or {}
    body: Body = {"description": raw.get("description", ""), "config": own_config(config),
                  **{d: keyed([_rule(r) for r in raw.get(d) or []]) for d in DIRECTIONS}}
    return Resource(acl(raw["name"]), body, owner=config.get(OWNER_KEY), applied=config.get(APPLIED_KEY))


def _rule(raw: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in sorted(raw.items()) if v not in ("", None)}


def parents(lab: Lab) -> set[str]:
    return set()  # not nested


def named_by_devices(devices: Mapping[str, Mapping[str, str]], lab: Lab | None) -> tuple[Address, ...]:
    """The ACLs NICs apply (`security.acls`); with `lab`, those it declares."""
    return tuple(acl(n) for n in sorted(nic_acls(devices)) if lab is None or n in lab.acls)


def comparable(have: Resource, want: Resource | None) -> Resource:
    return have if want is None else align(want, have)


def align(want: Resource, have: Resource) -> Resource:
    """The live ACL with its rules keyed as lab.yaml's (LXD keeps no meaningful order)."""
    body = {**have.body, **{d: matched(want.body[d], have.body[d]) for d in DIRECTIONS}}
    return Resource(have.address, body, have.depends_on, have.owner, have.applied, have.meta)


def matched(wanted: Rules, found: Rules) -> Rules:
    """`found` keyed as `wanted`: a same rule takes its key, the others (in LXD's order) the keys left, then
    the numbers after lab.yaml's."""
    rest = in_order(found)
    out: Rules = {}
    free = []
    for key in sorted(wanted, key=int):
        if wanted[key] in rest:
            rest.remove(wanted[key])
            out[key] = wanted[key]
        else:
            free.append(key)
    extra = (str(n) for n in range(len(wanted), len(wanted) + len(rest)))
    for rule in rest:
        out[free.pop(0) if free else next(extra)] = rule
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


# --- applied ----------------------------------------------------------------------------------

def apply(run: Runner, change: Change, action: Action) -> None:
    name = change.address.name
    if action == Action.DELETE:
        return run.lxd.delete("acl", name)
    want = change.after or {}
    body = {"description": want["description"], "config": {**want["config"], OWNER_KEY: run.lab_name,
                                                           APPLIED_KEY: digest(want)},
            **{d: in_order(want[d]) for d in DIRECTIONS}}
    if action == Action.CREATE:
        return run.lxd.create("acl", {"name": name, **body})
    raw, etag = run.lxd.get("acl", name)
    now = align(Resource(change.address, want), from_lxd(raw))
    if now.body != change.before:
        raise StaleState(f"{change.address} changed since the plan was made; run plan again")
    run.lxd.put("acl", name, body, etag)


def imported(raw: RawState, chosen: Chosen) -> dict[str, Any]:
    return {}  # a network's ACLs are not imported (a network naming one is imported as it is)
