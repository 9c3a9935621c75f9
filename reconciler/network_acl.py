"""LXD network ACLs in lab.yaml (`acls:`): their rules, what LXD 5.0 would refuse, and LXD's form.  Pure.

    acls:
      web-only:
        description: HTTP in from the clients' bridge, nothing else
        ingress:                      # towards the NICs the ACL applies to
          - {action: allow, source: 10.203.61.0/24, protocol: tcp, destination_port: 80}
          - {action: allow, protocol: icmp4, icmp_type: 8, description: ping}
        egress:                       # leaving them
          - {action: reject, destination: [10.203.62.0/24, 10.203.63.5-10.203.63.9]}

Each rule is what `lxc network acl rule add` takes: action (allow, drop, reject), source and
destination (addresses, networks, ranges; a list or LXD's comma-separated string), protocol (tcp,
udp, icmp4, icmp6), source_port and destination_port (ports and LOW-HIGH ranges, with tcp or udp),
icmp_type and icmp_code (0-255, with icmp4 or icmp6), description, state (enabled, disabled,
logged).  The checks are LXD's own (its rule validation), so a rule LXD would refuse is a
validation error at its line rather than a failed apply.  LXD orders rules by action itself
(drop, reject, allow, then the network's default): the order in lab.yaml carries no meaning.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from .values import address_range, anchored

ACL_NAME = r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"  # LXD: 1-63, letters, digits, '-'; not 0-9 or '-' first
NETWORK_SELECTORS = ("@internal", "@external")
DEFAULT_ACTION_KEYS = ("security.acls.default.ingress.action", "security.acls.default.egress.action")
DEFAULT_LOGGED_KEYS = ("security.acls.default.ingress.logged", "security.acls.default.egress.logged")
ACL_KEYS = ("security.acls", *DEFAULT_ACTION_KEYS, *DEFAULT_LOGGED_KEYS)
ACTIONS = ("allow", "drop", "reject")
LIST_FIELDS = ("source", "destination", "source_port", "destination_port")


def _items(value: Any) -> Any:
    """LXD's comma-separated form, or a YAML list (of strings or numbers), as a list of strings."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    if isinstance(value, int) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, list):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


def subject_family(item: str) -> int | str:
    """4 or 6 for an address, network or range; "name" for an ACL name or @internal/@external."""
    if "-" in item:  # a range, or an ACL name: it has dashes too
        ends = address_range(item)
        if ends and int(ends[0]) <= int(ends[1]):
            return ends[0].version
    else:
        try:
            return ipaddress.ip_network(item, strict=False).version
        except ValueError:
            pass
    if item in NETWORK_SELECTORS or re.fullmatch(ACL_NAME, item):
        return "name"
    raise ValueError(f"{item!r} is not an address, a network (10.0.0.0/24), a range (10.0.0.1-10.0.0.9, the"
                     " lower first), an ACL name or @internal/@external")


def _subjects(items: list[str]) -> list[str]:
    for item in items:
        subject_family(item)
    return items


def _ports(items: list[str]) -> list[str]:
    for item in items:
        low, dash, high = item.partition("-")
        if not (low.isdigit() and (not dash or high.isdigit())):
            raise ValueError(f"{item!r} is not a port or a range LOW-HIGH")
        if not all(1 <= int(p) <= 65535 for p in (low, high or low)):
            raise ValueError(f"port {item} is not 1 to 65535")
        if dash and int(low) >= int(high):
            raise ValueError(f"port range {item}: LXD wants the first port lower than the last")
    return items


def _icmp(value: Any) -> str:
    text = str(value)
    if isinstance(value, bool) or not text.isdigit() or int(text) > 255:
        raise ValueError(f"{value!r} is not 0 to 255")
    return text


def _one_or_more(one: str, what: str, number: dict | None = None) -> dict:
    """LXD's comma-separated string of `one`, or a list of them (numbers too, where given)."""
    single = [{"type": "string", "pattern": anchored(one)}] + ([number] if number else [])
    return {"anyOf": [{"type": "string", "pattern": anchored(rf" *{one}(?: *, *{one})* *")}, *single[1:],
                      {"type": "array", "items": {"anyOf": single}, "minItems": 1}], "description": what}


SUBJECT = rf"(?:[0-9A-Fa-f.:/-]+|@internal|@external|{ACL_NAME})"
PORT = r"[0-9]{1,5}(?:-[0-9]{1,5})?"
Subjects = Annotated[list[str], BeforeValidator(_items), AfterValidator(_subjects), WithJsonSchema(
    _one_or_more(SUBJECT, "addresses, networks, ranges (a list or a, b, c)"))]
Ports = Annotated[list[str], BeforeValidator(_items), AfterValidator(_ports), WithJsonSchema(
    _one_or_more(PORT, "ports and LOW-HIGH ranges (a list or 80, 443)", {"type": "integer", "minimum": 1,
                                                                         "maximum": 65535}))]
Icmp = Annotated[str, BeforeValidator(_icmp), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 0, "maximum": 255}, {"type": "string", "pattern": "^[0-9]{1,3}$"}]})]


class AclRule(BaseModel):
    """One rule of an ACL, as `lxc network acl rule add` takes it."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    action: Literal["allow", "drop", "reject"]
    source: Subjects | None = None
    destination: Subjects | None = None
    protocol: Literal["tcp", "udp", "icmp4", "icmp6"] | None = None
    source_port: Ports | None = None
    destination_port: Ports | None = None
    icmp_type: Icmp | None = None
    icmp_code: Icmp | None = None
    description: str = ""
    state: Literal["enabled", "disabled", "logged"] = Field("enabled", description="logged: lxc network acl show-log")



def rule_problems(rule: AclRule) -> list[tuple[str, str]]:
    """(field, problem) of ports, ICMP fields and address families that do not fit, as LXD judges them."""
    ports = [k for k in ("source_port", "destination_port") if getattr(rule, k)]
    icmp = [k for k in ("icmp_type", "icmp_code") if getattr(rule, k) is not None]
    source, destination = families(rule.source), families(rule.destination)
    out = []
    if rule.source and rule.destination and (_one_sided(source, destination) or _one_sided(destination, source)):
        out.append(("destination", "source and destination mix IPv4 and IPv6: LXD refuses the rule"))
    if rule.protocol in ("tcp", "udp"):
        out += [(k, f"goes with protocol icmp4 or icmp6, not {rule.protocol}") for k in icmp]
    elif rule.protocol in ("icmp4", "icmp6"):
        wrong = 6 if rule.protocol == "icmp4" else 4
        out += [(k, f"goes with protocol tcp or udp, not {rule.protocol}") for k in ports]
        out += [(k, f"protocol {rule.protocol} cannot match IPv{wrong} addresses") for k in ("source", "destination")
                if wrong in families(getattr(rule, k))]
    else:
        out += [(k, "needs a protocol: tcp or udp for ports, icmp4 or icmp6 for ICMP") for k in ports + icmp]
    return out


def _one_sided(a: set[int | str], b: set[int | str]) -> bool:
    """An address family on one side that the other side has neither addresses of nor names (LXD's test)."""
    return "name" not in b and any(v in a and v not in b for v in (4, 6))


def families(items: list[str] | None) -> set[int | str]:
    return {subject_family(i) for i in items or ()}


class NetworkAcl(BaseModel):
    """An LXD network ACL the lab owns: networks (and OVN NICs) name it in security.acls."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    description: str = ""
    ingress: list[AclRule] = Field([], description="rules for traffic towards the NICs it applies to")
    egress: list[AclRule] = Field([], description="rules for traffic leaving them")


def lxd_rule(rule: AclRule) -> dict[str, str]:
    """A rule in LXD's form: strings, lists comma-joined, empty fields left out (as LXD returns them)."""
    out: dict[str, str] = {"action": rule.action, "state": rule.state}
    for key in LIST_FIELDS:
        items = getattr(rule, key)
        if items:
            out[key] = ",".join(items)
    for key in ("protocol", "icmp_type", "icmp_code", "description"):
        value = getattr(rule, key)
        if value:
            out[key] = value
    return dict(sorted(out.items()))


def named_subjects(rule: AclRule) -> list[tuple[str, str]]:
    """(field, name) of every ACL name or @internal/@external the rule's source or destination holds."""
    return [(key, item) for key in ("source", "destination") for item in getattr(rule, key) or ()
            if subject_family(item) == "name"]


def acl_names(value: str | None) -> list[str]:
    """The ACL names of a `security.acls` value (LXD splits on commas and trims)."""
    return [name.strip() for name in (value or "").split(",") if name.strip()]
