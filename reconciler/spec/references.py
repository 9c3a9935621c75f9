"""Pass 3: cross-references between entries (profiles, networks, ACLs, services, templates, HAProxy
servers), never calling "unknown" a name that is declared but invalid; a kind with a table of its own
checks its references in its module (its `problems` hook, called here in registry order)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from .. import haproxy as haproxy_spec
from .. import network_acl
from ..kinds import OBJECT_KINDS
from ..network_acl import ACL_NAME
from ..provision import validate_path
from .declared import COMPARED, Declared, Found, complete, devices_everywhere, profiles_known, suggest
from .models import INSTANCE_NAME, Lab, expanded_devices, has_root_disk
from .proxies import proxy_listen_clashes, proxy_protocol_pairs
from .subnets import lab_subnet_overlaps


def reference_problems(lab: Lab, valid: Lab, declared: Declared) -> list[Found]:
    """Pass 3 over every entry, `lab` (what failed pass 1 left out or stood in for, and nothing judged that
    depends on it), but the PROXY protocol pairs over `valid` entries only: a pair joins two entries'
    settings, and a stand-in for either would make one up."""
    out = (_template_problems(lab, declared) + _watch_problems(lab, declared) + _after_problems(lab, declared)
           + _rename_problems(lab, declared) + proxy_listen_clashes(lab, declared) + lab_subnet_overlaps(lab))
    out += (_profile_refs(lab, declared) + _network_refs(lab, declared) + _root_disks(lab, declared)
            + _existing_overlaps(lab, declared) + _acl_refs(lab, declared))
    out += _adopt_refs(lab, declared)
    out += [f for kind in OBJECT_KINDS if hasattr(kind, "problems") for f in kind.problems(lab, declared)]
    if declared.containers is not None:
        out += _haproxy_refs(lab, declared) + proxy_protocol_pairs(valid, declared)
    return out


# --- Network ACLs: who names them ---------------------------------------------------------------

def _existing_known(declared: Declared, table: str) -> bool:
    """Whether `existing.TABLE` passed pass 1 (else it is the default's, not lab.yaml's)."""
    return not declared.failed.at(("existing", table))


def _acl_refs(lab: Lab, declared: Declared) -> list[Found]:
    out = _nic_acl_problems(lab) if _existing_known(declared, "networks") else []
    if declared.acls is None or not _existing_known(declared, "acls"):
        return out
    known = declared.acls | set(lab.existing.acls)
    out += [Found(where + ("security.acls",), f"unknown network ACL {name!r}{suggest(name, known)}"
                  " (declare it under acls:, or list it under existing.acls)")
            for where, settings in _acl_users(lab) for name in network_acl.acl_names(settings.get("security.acls"))
            if name not in known and re.fullmatch(ACL_NAME, name)]
    return out + _acl_subject_problems(lab, known)


def _acl_users(lab: Lab):
    """(location, settings) of every network config and NIC device that may name ACLs."""
    for name, network in lab.networks.items():
        yield ("networks", name, "config"), network.config
    for path, device in devices_everywhere(lab):
        if device.get("type") == "nic":
            yield path, device


def _nic_acl_problems(lab: Lab) -> list[Found]:
    """LXD 5.0 takes ACL keys on OVN NICs only; a lab network is a bridge, so its NICs cannot carry them."""
    out = []
    for path, device in devices_everywhere(lab):
        keys = [k for k in network_acl.ACL_KEYS if k in device]
        if device.get("type") == "nic" and keys and device.get("network") not in lab.existing.networks:
            network = _nic_network(device)
            where = f"network {network!r}" if network in lab.networks else "its network"
            out.append(Found(path + (keys[0],), f"LXD 5.0 takes {keys[0]} only on OVN NICs: for a NIC on a bridge,"
                             f" set it on {where} (networks.NAME.config), which applies it to every NIC there"))
    return out


def _acl_subject_problems(lab: Lab, known: frozenset[str] | set[str]) -> list[Found]:
    """Named subjects must be ACLs, and a bridge (every network a lab declares) takes none of them."""
    on_bridges = {name for net in lab.networks.values() for name in network_acl.acl_names(net.config.get("security.acls"))}
    out = []
    for name, acl in lab.acls.items():
        for direction in ("ingress", "egress"):
            for i, rule in enumerate(getattr(acl, direction)):
                for key, item in network_acl.named_subjects(rule):
                    where = ("acls", name, direction, i, key)
                    if item not in network_acl.NETWORK_SELECTORS and item not in known:
                        out.append(Found(where, f"unknown network ACL {item!r}{suggest(item, known)}"))
                    elif name in on_bridges:
                        out.append(Found(where, f"{item!r}: a bridge network takes addresses, networks and ranges"
                                         " only (LXD: ACL names and @internal/@external need OVN)"))
    return out


def _watch_problems(lab: Lab, declared: Declared) -> list[Found]:
    return [Found(("containers", cname, "services", sname, "watches", i),
                  f"{watched} is not one of this container's files{suggest(watched, c.files)}")
            for cname, c in lab.containers.items() if not declared.failed.at(("containers", cname, "files"))
            for sname, service in c.services.items()
            for i, watched in enumerate(service.watches) if watched not in c.files and not validate_path(watched)]


def _after_problems(lab: Lab, declared: Declared) -> list[Found]:
    """A service waits only for services of its own container."""
    return [Found(("containers", cname, "services", sname, "after", i),
                  f"{other!r} is not one of this container's services{suggest(other, c.services)}")
            for cname, c in lab.containers.items() if not declared.failed.at(("containers", cname, "services"))
            for sname, service in c.services.items()
            for i, other in enumerate(service.after) if other not in c.services or other == sname]


def _rename_problems(lab: Lab, declared: Declared) -> list[Found]:
    out = []
    for cname, c in lab.containers.items():
        old = c.renamed_from
        if old is None:
            continue
        where = ("containers", cname, "renamed_from")
        if not re.fullmatch(INSTANCE_NAME, old):
            out.append(Found(where, f"{old!r} is not a container name"))
        elif old == cname or old in (declared.containers or lab.containers):
            out.append(Found(where, f"{old!r} is a container of this lab: renamed_from names the old name,"
                             " which lab.yaml no longer has"))
    return out


def _template_problems(lab: Lab, declared: Declared) -> list[Found]:
    """Unknown names and syntax errors, from each template's syntax tree (nothing is rendered)."""
    templated = [(cname, c, path, spec.template) for cname, c in lab.containers.items()
                 for path, spec in c.files.items() if spec.template is not None]
    if not templated:
        return []
    from .. import templates  # jinja2 only for labs with templates
    out = []
    for cname, c, path, text in templated:
        own_vars = None if declared.failed.at(("containers", cname, "vars")) else frozenset(c.vars)
        known = templates.Known(declared.containers, own_vars, declared.haproxy)
        out += [Found(("containers", cname, "files", path, "template"), p.message, line=p.line)
                for p in templates.problems(text, known)]
    return out


def _profile_refs(lab: Lab, declared: Declared) -> list[Found]:
    if declared.profiles is None or not _existing_known(declared, "profiles"):
        return []
    known = declared.profiles | set(lab.existing.profiles)
    out = []
    for cname, container in lab.containers.items():
        if not profiles_known(declared, cname):
            continue
        for i, name in enumerate(container.profiles):
            if name not in known:
                out.append(Found(("containers", cname, "profiles", i),
                                 f"unknown profile {name!r}{suggest(name, known)}"
                                 " (declare it under profiles:, or list it under existing.profiles)"))
        if len(set(container.profiles)) != len(container.profiles):
            out.append(Found(("containers", cname, "profiles"), "a profile is listed twice"))
    return out


def _nic_network(device: Mapping[str, str]) -> str | None:
    if device.get("type") != "nic":
        return None
    if "network" in device:
        return device["network"]
    return device.get("parent") if device.get("nictype") == "bridged" else None


def _network_refs(lab: Lab, declared: Declared) -> list[Found]:
    if declared.networks is None or not _existing_known(declared, "networks"):
        return []
    known = declared.networks | set(lab.existing.networks)
    out = []
    for path, device in devices_everywhere(lab):
        network = _nic_network(device)
        if network is not None and network not in known:
            key = "network" if "network" in device else "parent"
            out.append(Found(path + (key,), f"unknown network {network!r}{suggest(network, known)}"
                             " (declare it under networks:, or list it under existing.networks)"))
    return out


def _adopt_refs(lab: Lab, declared: Declared) -> list[Found]:
    """What the lab adopts, it declares (adopting means taking over as lab.yaml describes it)."""
    out = []
    for table in type(lab.adopt).model_fields:  # one list per table: the names are that table's keys
        names = declared.of(table)
        for i, name in enumerate(getattr(lab.adopt, table)):
            if names is not None and name not in names:
                out.append(Found(("adopt", table, i), f"{name!r} is not one of the lab's {table}{suggest(name, names)}"
                                 f" (declare it under {table}: as it is, to adopt it)"))
    return out


def _existing_overlaps(lab: Lab, declared: Declared) -> list[Found]:
    """An object both owned and existing: plan would take over what the lab says it only uses."""
    out = []
    for table, names, existing in (("profiles", declared.profiles, lab.existing.profiles),
                                   ("networks", declared.networks, lab.existing.networks),
                                   ("acls", declared.acls, lab.existing.acls)):
        implicit = table == "profiles" and table not in lab.existing.model_fields_set
        for name in sorted((names or set()) & set(existing) if _existing_known(declared, table) else ()):
            if implicit and name == "default" and lab.project is not None:
                continue  # an owned project's default profile is the lab's to declare
            where = "existing.profiles, which is [default] unless written" if implicit else f"existing.{table}"
            out.append(Found((table, name), f"{name!r} is declared here and listed under {where}: the lab"
                             " cannot own what it only uses; remove one of the two", True))
    return out


def _root_disks(lab: Lab, declared: Declared) -> list[Found]:
    if not _existing_known(declared, "profiles"):
        return []
    out = []
    for cname, container in lab.containers.items():
        if any(p in lab.existing.profiles for p in container.profiles) or not complete(lab, declared, container):
            continue  # an existing profile may carry it (checked against live state in the plan)
        if not profiles_known(declared, cname) or declared.failed.within(("containers", cname, "devices")):
            continue  # a device that failed may be the root disk
        if declared.profiles is not None and not has_root_disk(expanded_devices(lab, container)):
            out.append(Found(("containers", cname, "profiles"),
                             "no root disk: none of these profiles, nor the container, has a disk with path /"))
    return out


def _haproxy_refs(lab: Lab, declared: Declared) -> list[Found]:
    found = haproxy_spec.validate_haproxy(dict(lab.haproxy), set(declared.containers or ()),
                                          declared.failed.under(("haproxy",)), haproxy_spec.HintBudget(COMPARED))
    return [Found(("haproxy", *loc), message) for loc, message in found]
