"""Pass 2: the names and values of every entry, each on its own (what failed pass 1 left out), and the
`source:` files they name."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from .. import network_acl, values
from ..fields import RESERVED_PREFIXES
from ..network_acl import ACL_NAME, NetworkAcl
from ..provision import contents_problem, validate_path, validate_service_name
from ..source import PathSet
from .declared import Found, suggest
from .models import CONFIG_KEY, CONTAINER_BOOLS, DEVICE_NAME, TABLE_NAMES, Container, Lab, Network

MAX_SOURCE_BYTES = 8 * 1024 * 1024  # a `source:` file is read whole, and shown in plans


def name_problems(data: Mapping) -> list[Found]:
    """Names LXD would refuse, at the key itself (of every entry, valid or not)."""
    out = []
    for table, (pattern, what) in TABLE_NAMES.items():
        names = data.get(table)
        for name in names if isinstance(names, dict) else ():
            if not re.fullmatch(pattern, str(name)):
                out.append(Found((table, name), f"{str(name)!r} is not a valid {what} name", True))
            elif table == "profiles" and str(name).startswith(tuple(RESERVED_PROFILES)):
                prefix = next(p for p in RESERVED_PROFILES if str(name).startswith(p))
                out.append(Found((table, name), f"profile names starting with {prefix!r} are reconciler's"
                                 f" own ({RESERVED_PROFILES[prefix]})", True))
    return out


LOCK_PREFIX = "reconciler-lock-"
CHECKPOINT_PREFIX = "reconciler-checkpoint-"
RESERVED_PROFILES = {LOCK_PREFIX: "a lab's apply lock", CHECKPOINT_PREFIX: "a lab's checkpoint"}


def _config_problems(path: tuple, config: Mapping[str, str], booleans: Iterable[str] = ()) -> list[Found]:
    out = []
    for key, value in config.items():
        if not re.fullmatch(CONFIG_KEY, key):
            out.append(Found(path + (key,), f"invalid config key {key!r}", True))
        elif key.startswith(RESERVED_PREFIXES):
            out.append(Found(path + (key,), "volatile.*, image.* and user.reconciler.* keys belong to LXD"
                             " or to reconciler and cannot be set", True))
        elif key in booleans and values.bool_problem(value):
            out.append(Found(path + (key,), str(values.bool_problem(value))))
    return out


def _device_problems(path: tuple, devices: Mapping[str, Mapping[str, str]]) -> list[Found]:
    out = []
    for name, device in devices.items():
        where = path + (name,)
        if not re.fullmatch(DEVICE_NAME, name):
            out.append(Found(where, f"{name!r} is not a valid device name", True))
        out += [Found(where + (key,), f"invalid device key {key!r}", True)
                for key in device if not re.fullmatch(CONFIG_KEY, key)]
        if "type" not in device:
            out.append(Found(where, "a device needs a `type` (nic, disk, proxy, ...)", True))
        elif device["type"] not in values.DEVICE_TYPES:
            out.append(Found(where + ("type",), f"unknown device type {device['type']!r}"
                             f"{suggest(device['type'], values.DEVICE_TYPES)}"))
        elif device["type"] == "proxy":
            out += _proxy_problems(where, device)
        elif device["type"] == "nic":
            out += _acl_key_problems(where, device)
    return out


def _proxy_problems(where: tuple, device: Mapping[str, str]) -> list[Found]:
    out = [Found(where + (key,), f"unknown proxy device key {key!r}{suggest(key, values.PROXY_KEYS)}", True)
           for key in device if key not in values.PROXY_KEYS]
    for key in ("listen", "connect"):
        if key not in device:
            out.append(Found(where, f"a proxy device needs `{key}` (like tcp:127.0.0.1:80)", True))
        elif values.proxy_address_problem(device[key]):
            out.append(Found(where + (key,), str(values.proxy_address_problem(device[key]))))
    out += [Found(where + (key,), str(values.bool_problem(device[key])))
            for key in values.PROXY_BOOLS if key in device and values.bool_problem(device[key])]
    bind = device.get("bind", "host")
    if bind not in values.BIND_SIDES:
        out.append(Found(where + ("bind",), f"bind must be host or instance, not {bind!r}"))
    if device.get("proxy_protocol") in values.TRUE_WORDS and (
            device.get("nat") in values.TRUE_WORDS or not device.get("connect", "tcp:").startswith("tcp:")):
        out.append(Found(where + ("proxy_protocol",), "LXD sends the PROXY protocol only to a tcp: connect"
                         " address and not with nat: true (nat keeps the client's address by itself)"))
    return out + _proxy_sides(where, device, bind)


def _proxy_sides(where: tuple, device: Mapping[str, str], bind: str) -> list[Found]:
    """A unix socket on the host side could replace or expose a host socket (LXD's own, too)."""
    listen, connect = device.get("listen", ""), device.get("connect", "")
    out = []
    if listen.startswith("unix:") and bind == "host":
        out.append(Found(where + ("listen",), "a unix socket listen with bind: host is made on the host:"
                         " refused (use tcp:, or bind: instance)"))
    if connect.startswith("unix:") and bind != "host":
        out.append(Found(where + ("connect",), "a unix socket connect with bind: instance reaches a host"
                         " socket: refused (use tcp:, or bind: host)"))
    if not values.proxy_address_problem(listen) and not values.proxy_address_problem(connect) \
            and values.port_count(connect) not in (1, values.port_count(listen)):
        out.append(Found(where + ("connect",), "connect names a different number of ports than listen"
                         " (one port, or as many as listen)"))
    nat = device.get("nat", "false") in values.TRUE_WORDS
    parts = values.split_inet(listen)
    if nat and parts and parts[1] in values.WILDCARD_ADDRESSES:
        out.append(Found(where + ("listen",), "LXD cannot listen on a wildcard address with nat: true"))
    return out


def _network_problems(name: str, network: Network) -> list[Found]:
    where = ("networks", name, "config")
    out = _config_problems(where, network.config, values.BRIDGE_BOOLS + network_acl.DEFAULT_LOGGED_KEYS)
    for key in ("ipv4.address", "ipv6.address"):
        problem = values.bridge_address_problem(key, network.config[key]) if key in network.config else None
        if problem:
            out.append(Found(where + (key,), problem))
    for key in values.DHCP_RANGE_KEYS:
        address = network.config.get(key.replace("dhcp.ranges", "address"))
        problem = values.dhcp_ranges_problem(key, network.config[key], address) if key in network.config else None
        if problem:
            out.append(Found(where + (key,), problem))
    return out + _acl_key_problems(where, network.config)


def _acl_key_problems(where: tuple, settings: Mapping[str, str]) -> list[Found]:
    """security.acls names ACLs; the default actions are LXD's three."""
    out = [Found(where + ("security.acls",), f"{name!r} is not a network ACL name")
           for name in network_acl.acl_names(settings.get("security.acls")) if not re.fullmatch(ACL_NAME, name)]
    return out + [Found(where + (key,), f"{settings[key]!r} is not one of {', '.join(network_acl.ACTIONS)}")
                  for key in network_acl.DEFAULT_ACTION_KEYS if key in settings
                  and settings[key] not in network_acl.ACTIONS]


def _acl_problems(name: str, acl: NetworkAcl, failed: PathSet) -> list[Found]:
    """What LXD would refuse in an ACL's rules, at the field of the rule it is about."""
    out = []
    for direction in ("ingress", "egress"):
        seen: dict[tuple, int] = {}
        # LXD takes ACL names and @internal/@external only where they name the far end of the traffic
        unnamed = "destination" if direction == "ingress" else "source"
        for i, rule in enumerate(getattr(acl, direction)):
            where = ("acls", name, direction, i)
            if failed.at(where):
                continue  # a stand-in: its own problems are reported, and it is nobody's duplicate
            out += [Found(where + (key,), message) for key, message in network_acl.rule_problems(rule)]
            out += [Found(where + (key,), f"{item!r}: an ACL name or @internal/@external goes in the"
                          f" {'source' if direction == 'ingress' else 'destination'} of {direction} rules only")
                    for key, item in network_acl.named_subjects(rule) if key == unnamed]
            same = tuple(sorted(network_acl.lxd_rule(rule).items()))
            if same in seen:
                out.append(Found(where, f"the same rule as {direction} rule {seen[same]}: LXD refuses duplicates"))
            seen.setdefault(same, i)
    return out


def _container_problems(name: str, container: Container, folder: Path, failed: PathSet) -> list[Found]:
    where = ("containers", name)
    out = _config_problems(where + ("config",), container.config, CONTAINER_BOOLS)
    out += _device_problems(where + ("devices",), container.devices)
    for path, spec in container.files.items():
        problem = validate_path(path)
        if problem:
            out.append(Found(where + ("files", path), f"path {path!r} {problem}", True))
        problem = None if failed.within(where + ("files", path)) else contents_problem(spec)
        if problem:
            out.append(Found(where + ("files", path), problem))
        if spec.source is not None:
            problem = source_problem(folder, spec.source)
            if problem:
                out.append(Found(where + ("files", path, "source"), problem))
    for sname, service in container.services.items():
        problem = validate_service_name(sname)
        if problem:
            out.append(Found(where + ("services", sname), f"service {sname!r} {problem}", True))
        out += [Found(where + ("services", sname, "watches", i), f"{watched!r} {validate_path(watched)}")
                for i, watched in enumerate(service.watches) if validate_path(watched)]
    return out


def source_problem(folder: Path, source: str) -> str | None:
    """Why a `source:` file cannot be copied, or None: it must be a regular file in the lab's folder.

    `folder` is resolved; symlinks are followed, so a link pointing out is refused like `../x`.
    """
    try:
        real = (folder / source).resolve(strict=True)
        info = real.stat()
    except FileNotFoundError:
        return f"source file {source!r} does not exist (it is read relative to {folder})"
    except (OSError, RuntimeError, ValueError) as err:  # a symlink loop, a permission, a NUL
        return f"source file {source!r} cannot be read: {getattr(err, 'strerror', None) or err}"
    if not real.is_relative_to(folder):
        return f"source file {source!r} is {real}, outside the lab's folder {folder}: copy it into the folder"
    if not stat.S_ISREG(info.st_mode):
        return f"source file {source!r} is not a regular file"
    if info.st_size > MAX_SOURCE_BYTES:
        return f"source file {source!r} is {info.st_size} bytes; at most {MAX_SOURCE_BYTES // 2**20} MiB"
    return None


def read_source(folder: Path, source: str) -> bytes:
    """A `source:` file's bytes, checked again as it is read (it may have changed since validate)."""
    problem = source_problem(folder, source)
    if problem:
        raise ValueError(problem)
    return (folder / source).resolve(strict=True).read_bytes()


def value_problems(lab: Lab, folder: Path, failed: PathSet) -> list[Found]:
    out: list[Found] = []
    for name, network in lab.networks.items():
        out += _network_problems(name, network)
    for name, profile in lab.profiles.items():
        out += _config_problems(("profiles", name, "config"), profile.config)
        out += _device_problems(("profiles", name, "devices"), profile.devices)
    for name, container in lab.containers.items():
        out += _container_problems(name, container, folder, failed)
    for name, acl in lab.acls.items():
        out += _acl_problems(name, acl, failed)
    return out + _owned_project_problems(lab, failed)


def _owned_project_problems(lab: Lab, failed: PathSet) -> list[Found]:
    if lab.project is None:
        return []
    out = []
    if lab.lxd.project == "default" and not failed.at(("lxd", "project")):
        out.append(Found(("project",), "the default project is LXD's own: name the lab's project in lxd.project",
                         True))
    out += _config_problems(("project", "config"), lab.project.config)
    out += [Found(("project", "config", key), "set features under project.features (images, profiles,"
                  " storage.volumes)", True) for key in lab.project.config if key.startswith("features.")]
    if not lab.project.features.profiles and "default" in lab.profiles:
        out.append(Found(("profiles", "default"), "the project shares the default project's profiles"
                         " (project.features.profiles: false): its default profile is not the lab's", True))
    return out
