"""The models of lab.yaml, and loading it with every error at once as FILE:LINE:COL.

Values that LXD stores as strings (config keys, device keys) are normalised to LXD's
string form here, so that the rest of the program compares like with like.

Loading checks in three passes, and reports all three together:
1. types: each network, profile, container and haproxy entry is validated on its own, so one
   bad entry hides nothing of the others; in an entry that fails, each part that failed is left
   out or stood in for (`_salvage`), so that one bad field hides nothing of its siblings;
2. values: names, keys, paths, proxy addresses, bridge addresses, `source:` files of every entry;
3. cross-references, never calling "unknown" a name that is declared but invalid (its own errors
   are already reported).
Passes 2 and 3 never judge a part that failed pass 1, nor what depends on it (Declared.failed).
"""

from __future__ import annotations

import bisect
import copy
import difflib
import functools
import itertools
import re
import stat
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from . import haproxy as haproxy_spec
from . import network_acl, values
from . import schema as editor_schema
from .network_acl import ACL_NAME, NetworkAcl
from .provision import (
    PATH,
    SERVICE_NAME,
    FileSpec,
    ServiceSpec,
    contents_problem,
    validate_path,
    validate_service_name,
)
from .source import (
    NO_PATHS,
    Document,
    PathSet,
    Problem,
    SourceError,
    as_written,
    field_path,
    lab_files,
    read_documents,
    unread,
)

# The image servers `remote:alias` may name, as the lxc client knows them.
REMOTES = {"images": "https://images.linuxcontainers.org",
           "ubuntu": "https://cloud-images.ubuntu.com/releases",
           "ubuntu-daily": "https://cloud-images.ubuntu.com/daily"}
RESERVED_PREFIXES = ("volatile.", "image.", "user.reconciler.")
MAX_SOURCE_BYTES = 8 * 1024 * 1024  # a `source:` file is read whole, and shown in plans

CONFIG_KEY = r"[A-Za-z0-9][A-Za-z0-9._-]*"
INSTANCE_NAME = haproxy_spec.CONTAINER_NAME
NETWORK_NAME = r"[A-Za-z][A-Za-z0-9_-]{0,14}"  # a Linux interface name
PROFILE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
DEVICE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
LAB_NAME = r"[a-z0-9][a-z0-9-]{0,62}"
PROJECT_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"  # it becomes part of LXD API paths
REMOTE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}"  # an lxc remote; it becomes a file name (servercerts/NAME.crt)
TARGET = r"@?[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"  # a cluster member, or @ and a cluster group
PACKAGE_NAME = r"[A-Za-z0-9][A-Za-z0-9+._:-]{0,254}"
IMAGE = rf"(?:(?:{'|'.join(map(re.escape, REMOTES))}):)?[A-Za-z0-9][A-Za-z0-9_./-]*"
CONTAINER_BOOLS = ("security.nesting", "security.privileged", "boot.autostart")


def lxd_string(value: Any) -> str:
    """A YAML scalar in LXD's string form: true -> "true", 5 -> "5"; a number as written: 010 -> "010"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or value == "":
        # LXD drops a key set to "": it would show as drift forever. Leave the key out instead.
        raise ValueError("needs a value (LXD drops empty keys; to unset one, leave it out)")
    if isinstance(value, (int, float)):
        return as_written(value) or str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"must be a string, number or boolean, not {type(value).__name__}")


# --- Schema fragments (schemas/lab.schema.json), from the same patterns the checks use --------

def _name_schema(pattern: str) -> dict:
    return {"pattern": values.anchored(pattern)}


VALUE_SCHEMA = {"type": ["string", "number", "boolean"], "minLength": 1}
CONFIG_KEY_SCHEMA = {"pattern": values.anchored(CONFIG_KEY),
                     "not": {"pattern": "^(?:" + "|".join(map(re.escape, RESERVED_PREFIXES)) + ")"}}


def _config_schema(properties: Mapping[str, dict] | None = None) -> dict:
    schema = {"type": "object", "propertyNames": CONFIG_KEY_SCHEMA, "additionalProperties": VALUE_SCHEMA}
    return schema | ({"properties": dict(properties)} if properties else {})


def _when(key: str, pattern: str, then: dict) -> dict:
    return {"if": {"properties": {key: {"pattern": pattern}}, "required": [key]}, "then": then}


PROXY_SCHEMA = {
    "required": ["listen", "connect"],
    "propertyNames": {"enum": list(values.PROXY_KEYS)},
    "properties": {"listen": {"type": "string", "pattern": values.anchored(values.PROXY_ADDRESS)},
                   "connect": {"type": "string", "pattern": values.anchored(values.PROXY_ADDRESS)},
                   "bind": {"enum": list(values.BIND_SIDES)},
                   **{key: values.BOOL_SCHEMA for key in values.PROXY_BOOLS}},
    # a unix socket never on the host side: bind host listens there, bind instance connects from there
    "allOf": [_when("listen", "^unix:", {"required": ["bind"],
                                         "properties": {"bind": {"enum": ["instance", "guest", "container"]}}}),
              _when("connect", "^unix:", {"properties": {"bind": {"const": "host"}}})],
}
DEVICE_SCHEMA = {
    "type": "object", "required": ["type"], "propertyNames": _name_schema(CONFIG_KEY),
    "additionalProperties": VALUE_SCHEMA, "properties": {"type": {"enum": list(values.DEVICE_TYPES)}},
    "allOf": [{"if": {"properties": {"type": {"const": "proxy"}}, "required": ["type"]}, "then": PROXY_SCHEMA}],
    "description": "an LXD device: `type` and its keys",
}
BRIDGE_CONFIG = {"ipv4.address": {"type": "string", "pattern": values.anchored(values.IPV4_CIDR)},
                 "ipv6.address": {"type": "string", "pattern": values.anchored(values.IPV6_CIDR)},
                 "security.acls": {"type": "string", "description": "network ACLs, comma-separated"},
                 **{key: {"enum": list(network_acl.ACTIONS)} for key in network_acl.DEFAULT_ACTION_KEYS},
                 **{key: values.BOOL_SCHEMA for key in values.BRIDGE_BOOLS + network_acl.DEFAULT_LOGGED_KEYS}}


def _keyed(pattern: str, description: str) -> Any:
    """A Field whose mapping's keys follow `pattern` (checked in pass 2, stated in the schema)."""
    return Field(default_factory=dict, description=description,
                 json_schema_extra={"propertyNames": _name_schema(pattern)})


LxdValue = Annotated[str, BeforeValidator(lxd_string), WithJsonSchema(VALUE_SCHEMA)]
Config = Annotated[dict[str, LxdValue], WithJsonSchema(_config_schema() | {
    "description": "LXD config keys; values become strings"})]
Device = Annotated[dict[str, LxdValue], WithJsonSchema(DEVICE_SCHEMA)]
Devices = Annotated[dict[str, Device], WithJsonSchema({
    "type": "object", "propertyNames": _name_schema(DEVICE_NAME), "additionalProperties": DEVICE_SCHEMA})]


def _profile_ref(value: str) -> str:
    if "," in value:  # the guide's `lxc profile assign web1 default,macvlan`
        raise ValueError(f"{value!r} is not a profile name: list them, [{value.replace(',', ', ')}]")
    if not re.fullmatch(PROFILE_NAME, value):
        raise ValueError(f"{value!r} is not a profile name")
    return value


ProfileRef = Annotated[str, AfterValidator(_profile_ref), WithJsonSchema(
    {"type": "string", "pattern": values.anchored(PROFILE_NAME), "description": "a profile name"})]
NetworkRef = Annotated[str, values.Matching(NETWORK_NAME, "a network name")]
AclRef = Annotated[str, values.Matching(ACL_NAME, "a network ACL name")]
PackageName = Annotated[str, values.Matching(PACKAGE_NAME, "a package name")]


class Strict(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class Connection(Strict):
    """Where the LXD daemon is."""

    socket: Annotated[str, values.Matching(PATH, "an absolute path")] | None = Field(
        None, description="unix socket path; default: $LXD_DIR, /var/lib/lxd, snap")
    project: Annotated[str, values.Matching(PROJECT_NAME, "an LXD project name")] = Field(
        "default", description="LXD project the lab lives in")
    remote: Annotated[str, values.Matching(REMOTE_NAME, "an lxc remote name")] | None = Field(
        None, description="an lxc remote (`lxc remote add`) to reach LXD over HTTPS, its certificate pinned;"
        " default (or `local`): the unix socket. `reconcile --remote NAME` wins over it")
    insecure_skip_verify: StrictBool = Field(
        False, description="DANGEROUS: do not check the remote's certificate (anyone on the path can"
        " read and change everything); only for the remote named here")

    @model_validator(mode="after")
    def _one_way_in(self) -> Connection:
        tls = self.remote not in (None, "local")
        if tls and self.socket:
            raise ValueError(f"socket and remote {self.remote!r} name two ways to LXD: keep one")
        if self.insecure_skip_verify and not tls:
            raise ValueError("insecure_skip_verify applies to an HTTPS remote only: set remote, or drop it")
        return self


class Network(Strict):
    """A managed LXD network (bridge) the lab owns."""

    type: Literal["bridge"] = "bridge"
    description: str = ""
    config: Annotated[dict[str, LxdValue], WithJsonSchema(_config_schema(BRIDGE_CONFIG))] = Field(
        {}, description="LXD bridge keys (ipv4.address, ipv4.nat, ...); values become strings")


class Profile(Strict):
    """An LXD profile the lab owns."""

    description: str = ""
    config: Config = {}
    devices: Devices = {}


class Container(Strict):
    """An LXD container the lab owns, and what runs inside it."""

    image: str = Field(description="a local image alias, or remote:alias (e.g. images:debian/12)",
                       json_schema_extra={"pattern": values.anchored(IMAGE)})
    type: Literal["container", "virtual-machine"] = "container"
    description: str = ""
    profiles: list[ProfileRef] = Field(["default"], description="applied in order; later ones win")
    config: Annotated[dict[str, LxdValue], WithJsonSchema(_config_schema(
        {key: values.BOOL_SCHEMA for key in CONTAINER_BOOLS}))] = Field({}, description="LXD config keys;"
                                                                        " values become strings")
    devices: Devices = {}
    state: Literal["running", "stopped"] = "running"
    packages: list[PackageName] = Field([], description="installed with the container's package manager")
    services: dict[str, ServiceSpec] = _keyed(SERVICE_NAME, "systemd units enabled and running")
    files: dict[str, FileSpec] = _keyed(PATH, "absolute path -> file or directory")
    vars: dict[str, LxdValue] = Field({}, description="values templates use as {{ vars.NAME }}")
    renamed_from: str | None = Field(None, description="the container's old name: it is renamed in place"
                                     " (keeping its root filesystem), not deleted and created anew")
    target: Annotated[str, values.Matching(TARGET, "a cluster member name, or @GROUP")] | None = Field(
        None, description="where it runs in an LXD cluster: a member's name, or @GROUP for any member of a"
        " cluster group; created there, and moved back there when found elsewhere")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        remote, sep, _ = value.partition(":")
        if sep and re.fullmatch(PROFILE_NAME, remote) and remote not in REMOTES:
            raise ValueError(f"unknown image remote {remote!r} (known: {', '.join(sorted(REMOTES))})")
        if not re.fullmatch(IMAGE, value):
            raise ValueError(f"{value!r} is not an image alias or remote:alias")
        return value


class ProjectFeatures(Strict):
    """What an owned project keeps to itself; the rest it shares with the default project."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True, populate_by_name=True)

    images: StrictBool = Field(False, description="images of its own (true), or the default project's (false:"
                               " the images a lab names are usually there)")
    profiles: StrictBool = Field(True, description="profiles of its own, its own `default` among them (true), or"
                                 " the default project's (false)")
    storage_volumes: StrictBool = Field(True, alias="storage.volumes", description="custom storage volumes of"
                                        " its own")

    def config(self) -> dict[str, str]:
        """As LXD's project keys."""
        flags = {"images": self.images, "profiles": self.profiles, "storage.volumes": self.storage_volumes}
        return {f"features.{k}": "true" if v else "false" for k, v in flags.items()}


class OwnedProject(Strict):
    """The project `lxd.project` names, owned by the lab: apply creates it before anything else, destroy
    deletes it after everything else (once nothing but the lab's was in it)."""

    description: str = ""
    features: ProjectFeatures = ProjectFeatures.model_validate({})
    config: Config = Field({}, description="other project keys (limits.*, restricted.*); features go under"
                           " features:")


class Existing(Strict):
    """LXD objects the lab uses but does not own: never changed or deleted."""

    profiles: list[ProfileRef] = ["default"]
    networks: list[NetworkRef] = []
    acls: list[AclRef] = []


class Adopt(Strict):
    """Objects that exist without any lab's tag and that this lab takes over as they are (what
    `reconcile import` writes): plan shows them as adoptions, apply tags them."""

    networks: list[NetworkRef] = []
    profiles: list[ProfileRef] = []
    containers: list[Annotated[str, values.Matching(INSTANCE_NAME, "a container name")]] = []


class Lab(Strict):
    """A lab: everything in one lab.yaml."""

    model_config = ConfigDict(defer_build=True, json_schema_extra={"patternProperties": {"^x-": {}}})

    lab: str = Field(description="the lab's name; tags every object it creates",
                     json_schema_extra={"pattern": values.anchored(LAB_NAME)})
    lxd: Connection = Connection.model_validate({})
    project: OwnedProject | None = Field(None, description="the lab owns lxd.project: created when absent,"
                                         " deleted by destroy; without this section the project must exist")
    existing: Existing = Existing.model_validate({})
    adopt: Adopt = Adopt.model_validate({})
    networks: dict[str, Network] = _keyed(NETWORK_NAME, "managed bridges the lab owns")
    profiles: dict[str, Profile] = _keyed(PROFILE_NAME, "profiles the lab owns")
    containers: dict[str, Container] = _keyed(INSTANCE_NAME, "containers the lab owns")
    acls: dict[str, NetworkAcl] = _keyed(ACL_NAME, "network ACLs the lab owns (security.acls of networks name them)")
    haproxy: dict[str, haproxy_spec.HAProxy] = _keyed(INSTANCE_NAME, "HAProxy, keyed by the container"
                                                      " running it")

    @model_validator(mode="before")
    @classmethod
    def _extensions(cls, data: Any) -> Any:
        """Top-level keys starting with x- are free: a place for YAML anchors, as in Compose."""
        return without_extensions(data)

    @field_validator("lab")
    @classmethod
    def _lab(cls, value: str) -> str:
        if not re.fullmatch(LAB_NAME, value):
            raise ValueError("lowercase letters, digits and '-', at most 63")
        return value


def without_extensions(data: Any) -> Any:
    return {k: v for k, v in data.items() if not str(k).startswith("x-")} if isinstance(data, dict) else data


TABLES: dict[str, type[BaseModel]] = {"acls": NetworkAcl, "networks": Network, "profiles": Profile,
                                      "containers": Container, "haproxy": haproxy_spec.HAProxy}
TABLE_NAMES = {"acls": (ACL_NAME, "network ACL"), "networks": (NETWORK_NAME, "network"),
               "profiles": (PROFILE_NAME, "profile"),
               "containers": (INSTANCE_NAME, "container")}


# --- Helpers the rest of the program uses ------------------------------------------------------

def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def expanded_devices(lab: Lab, container: Container) -> dict[str, dict[str, str]]:
    """Devices as LXD will apply them: profiles in order, a same-named device replaced whole."""
    devices: dict[str, dict[str, str]] = {}
    for name in container.profiles:
        if name in lab.profiles:
            devices.update(lab.profiles[name].devices)
    devices.update(container.devices)
    return devices


def has_root_disk(devices: Mapping[str, Mapping[str, str]]) -> bool:
    return any(d.get("type") == "disk" and d.get("path") == "/" for d in devices.values())


def listen_address(listen: str) -> tuple[str, str, str] | None:
    """'tcp:127.0.0.1:80' -> ('tcp', '127.0.0.1', '80'); None if it is not of that form."""
    return values.split_inet(listen)


class Found(NamedTuple):
    """A problem found in the lab: where (a path in lab.yaml) and what."""

    path: tuple
    message: str
    at_key: bool = False  # locate at the mapping key (a bad name) rather than at its value
    line: int = 0  # a line inside the value (a template's), 1-based


@dataclass(frozen=True)
class Declared:
    """Every name lab.yaml declares, valid or not (None where a section could not be read), and the
    parts of entries that failed pass 1 (left out, or stood in for: see `_salvage`)."""

    networks: frozenset[str] | None
    profiles: frozenset[str] | None
    containers: frozenset[str] | None
    acls: frozenset[str] | None = None
    haproxy: frozenset[str] | None = None
    failed: PathSet = NO_PATHS

    def broken_profiles(self, lab: Lab) -> frozenset[str]:
        """Declared profiles whose devices are unknown: they failed validation, or some of their devices did."""
        return (self.profiles or frozenset()) - {p for p in lab.profiles if not self.failed.within(("profiles", p, "devices"))}


# --- Pass 2: names and values of every entry (what failed pass 1 left out) ------------------------

def _name_problems(data: Mapping) -> list[Found]:
    """Names LXD would refuse, at the key itself (of every entry, valid or not)."""
    out = []
    for table, (pattern, what) in TABLE_NAMES.items():
        names = data.get(table)
        for name in names if isinstance(names, dict) else ():
            if not re.fullmatch(pattern, str(name)):
                out.append(Found((table, name), f"{str(name)!r} is not a valid {what} name", True))
            elif table == "profiles" and str(name).startswith(LOCK_PREFIX):
                out.append(Found((table, name), f"profile names starting with {LOCK_PREFIX!r} are reconciler's"
                                 " own (a lab's apply lock)", True))
    return out


LOCK_PREFIX = "reconciler-lock-"


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
                             f"{_suggest(device['type'], values.DEVICE_TYPES)}"))
        elif device["type"] == "proxy":
            out += _proxy_problems(where, device)
        elif device["type"] == "nic":
            out += _acl_key_problems(where, device)
    return out


def _proxy_problems(where: tuple, device: Mapping[str, str]) -> list[Found]:
    out = [Found(where + (key,), f"unknown proxy device key {key!r}{_suggest(key, values.PROXY_KEYS)}", True)
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


def _value_problems(lab: Lab, folder: Path, failed: PathSet) -> list[Found]:
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


# --- Pass 3: cross-references -------------------------------------------------------------------

def _reference_problems(lab: Lab, valid: Lab, declared: Declared) -> list[Found]:
    """Pass 3 over every entry, `lab` (what failed pass 1 left out or stood in for, and nothing judged that
    depends on it), but the PROXY protocol pairs over `valid` entries only: a pair joins two entries'
    settings, and a stand-in for either would make one up."""
    out = (_template_problems(lab, declared) + _watch_problems(lab, declared) + _after_problems(lab, declared)
           + _rename_problems(lab, declared) + _proxy_listen_clashes(lab, declared) + _lab_subnet_overlaps(lab))
    out += (_profile_refs(lab, declared) + _network_refs(lab, declared) + _root_disks(lab, declared)
            + _existing_overlaps(lab, declared) + _acl_refs(lab, declared))
    out += _adopt_refs(lab, declared)
    if declared.containers is not None:
        out += _haproxy_refs(lab, declared) + _proxy_protocol_pairs(valid, declared)
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
    out += [Found(where + ("security.acls",), f"unknown network ACL {name!r}{_suggest(name, known)}"
                  " (declare it under acls:, or list it under existing.acls)")
            for where, settings in _acl_users(lab) for name in network_acl.acl_names(settings.get("security.acls"))
            if name not in known and re.fullmatch(ACL_NAME, name)]
    return out + _acl_subject_problems(lab, known)


def _acl_users(lab: Lab):
    """(location, settings) of every network config and NIC device that may name ACLs."""
    for name, network in lab.networks.items():
        yield ("networks", name, "config"), network.config
    for path, device in _devices_everywhere(lab):
        if device.get("type") == "nic":
            yield path, device


def _nic_acl_problems(lab: Lab) -> list[Found]:
    """LXD 5.0 takes ACL keys on OVN NICs only; a lab network is a bridge, so its NICs cannot carry them."""
    out = []
    for path, device in _devices_everywhere(lab):
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
                        out.append(Found(where, f"unknown network ACL {item!r}{_suggest(item, known)}"))
                    elif name in on_bridges:
                        out.append(Found(where, f"{item!r}: a bridge network takes addresses, networks and ranges"
                                         " only (LXD: ACL names and @internal/@external need OVN)"))
    return out


def _proxy_protocol_pairs(lab: Lab, declared: Declared) -> list[Found]:
    """A proxy device and the HAProxy frontend it reaches agree on the PROXY protocol: both or neither."""
    out = []
    for reach in proxy_reaches(lab, declared):
        frontend = lab.haproxy[reach.container].frontends[reach.frontend]
        at_frontend = ("haproxy", reach.container, "frontends", reach.frontend, "accept_proxy")
        device = f"proxy device {reach.device} ({reach.listen})"
        expects = frontend.expects_proxy_from(reach.connect_address)
        if reach.nat and expects:
            out.append(Found(at_frontend, f"{device} uses nat: it keeps the client's address and sends no PROXY"
                             " header; drop accept_proxy"))
        elif reach.proxy_protocol and frontend.accept_proxy == "loopback" and not expects:
            out.append(Found(reach.path + ("proxy_protocol",), f"sends the PROXY protocol to frontend"
                             f" {reach.frontend!r} from {reach.connect_address}, but accept_proxy: loopback expects it"
                             f" only from 127.0.0.0/8: connect to 127.0.0.1, or set accept_proxy: true there"))
        elif reach.proxy_protocol and not expects:
            out.append(Found(reach.path + ("proxy_protocol",), f"sends the PROXY protocol to frontend"
                             f" {reach.frontend!r} ({frontend.bind}), which does not expect it: set accept_proxy:"
                             f" true there, or drop proxy_protocol"))
        elif expects and not (reach.proxy_protocol or reach.nat):
            out.append(Found(at_frontend, f"expects the PROXY protocol, but {device} of {reach.container} does not"
                             " send it: set proxy_protocol: true on it"))
    return out


class Reach(NamedTuple):
    """A proxy device of an HAProxy container whose connections reach one of its frontends."""

    container: str
    device: str
    path: tuple  # the device in lab.yaml (the container's, or the profile that brings it)
    listen: str
    frontend: str
    proxy_protocol: bool
    nat: bool
    connect_address: str  # where it connects inside the container: its connections come from there too


def proxy_reaches(lab: Lab, declared: Declared | None = None) -> list[Reach]:
    """Every (device, frontend) pair: host-side proxy devices of HAProxy containers, by connect port."""
    out = []
    for cname, spec in lab.haproxy.items():
        container = lab.containers.get(cname)
        if container is None or (declared is not None and not _complete(lab, declared, container)):
            continue
        for dname, device in expanded_devices(lab, container).items():
            found = _frontend_reached(spec, device)
            if found:
                out.append(Reach(cname, dname, _device_path(lab, container, cname, dname), device["listen"], found,
                                 device.get("proxy_protocol") in values.TRUE_WORDS,
                                 device.get("nat") in values.TRUE_WORDS, _connect_address(device)))
    return out


def _connect_address(device: Mapping[str, str]) -> str:
    parts = values.split_inet(device.get("connect", ""))
    return parts[1].strip("[]") if parts else "127.0.0.1"


def _frontend_reached(spec: haproxy_spec.HAProxy, device: Mapping[str, str]) -> str | None:
    connect = values.split_inet(device.get("connect", ""))
    if device.get("type") != "proxy" or device.get("bind", "host") != "host" or connect is None \
            or connect[0] != "tcp" or values.proxy_address_problem(device["connect"]) or "listen" not in device:
        return None
    low, high = values.port_span(connect[2])
    found = next((f for port in range(low, high + 1) if (f := haproxy_spec.frontend_at(spec, connect[1], port))), None)
    return found[0] if found else None


def proxied_frontends(lab: Lab, cname: str) -> dict[str, list[str]]:
    """frontend -> the proxy devices that send it the PROXY protocol (named in haproxy.cfg)."""
    out: dict[str, list[str]] = {}
    for reach in proxy_reaches(lab):
        if reach.container == cname and reach.proxy_protocol:
            out.setdefault(reach.frontend, []).append(f"{reach.device} ({reach.listen})")
    return out


def _watch_problems(lab: Lab, declared: Declared) -> list[Found]:
    return [Found(("containers", cname, "services", sname, "watches", i),
                  f"{watched} is not one of this container's files{_suggest(watched, c.files)}")
            for cname, c in lab.containers.items() if not declared.failed.at(("containers", cname, "files"))
            for sname, service in c.services.items()
            for i, watched in enumerate(service.watches) if watched not in c.files and not validate_path(watched)]


def _after_problems(lab: Lab, declared: Declared) -> list[Found]:
    """A service waits only for services of its own container."""
    return [Found(("containers", cname, "services", sname, "after", i),
                  f"{other!r} is not one of this container's services{_suggest(other, c.services)}")
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
    from . import templates  # jinja2 only for labs with templates
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
        if not _profiles_known(declared, cname):
            continue
        for i, name in enumerate(container.profiles):
            if name not in known:
                out.append(Found(("containers", cname, "profiles", i),
                                 f"unknown profile {name!r}{_suggest(name, known)}"
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


def _devices_everywhere(lab: Lab):
    for pname, profile in lab.profiles.items():
        for dname, device in profile.devices.items():
            yield ("profiles", pname, "devices", dname), device
    for cname, container in lab.containers.items():
        for dname, device in container.devices.items():
            yield ("containers", cname, "devices", dname), device


def _network_refs(lab: Lab, declared: Declared) -> list[Found]:
    if declared.networks is None or not _existing_known(declared, "networks"):
        return []
    known = declared.networks | set(lab.existing.networks)
    out = []
    for path, device in _devices_everywhere(lab):
        network = _nic_network(device)
        if network is not None and network not in known:
            key = "network" if "network" in device else "parent"
            out.append(Found(path + (key,), f"unknown network {network!r}{_suggest(network, known)}"
                             " (declare it under networks:, or list it under existing.networks)"))
    return out


def _adopt_refs(lab: Lab, declared: Declared) -> list[Found]:
    """What the lab adopts, it declares (adopting means taking over as lab.yaml describes it)."""
    out = []
    for table, names in (("networks", declared.networks), ("profiles", declared.profiles),
                         ("containers", declared.containers)):
        for i, name in enumerate(getattr(lab.adopt, table)):
            if names is not None and name not in names:
                out.append(Found(("adopt", table, i), f"{name!r} is not one of the lab's {table}{_suggest(name, names)}"
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


WILDCARDS = values.WILDCARD_ADDRESSES


def _complete(lab: Lab, declared: Declared, container: Container) -> bool:
    """Whether all of a container's lab profiles passed validation (else its devices are unknown)."""
    return not set(container.profiles) & declared.broken_profiles(lab)


def _profiles_known(declared: Declared, cname: str) -> bool:
    """Whether a container's list of profiles passed pass 1 (else the list is the default's, not lab.yaml's)."""
    return not declared.failed.at(("containers", cname, "profiles"))


def _proxy_listen_clashes(lab: Lab, declared: Declared) -> list[Found]:
    """Two proxy devices on one port (LXD checks this only when the second one starts).  Port ranges
    are intervals, so the check stays O(n log n) in listeners whatever ranges and counts it is fed."""
    seen = _Listeners()
    out = []
    for cname, container in lab.containers.items():
        if not (_complete(lab, declared, container) and _profiles_known(declared, cname)):
            continue
        for dname, device in expanded_devices(lab, container).items():
            listen = device.get("listen", "")
            parsed = values.split_inet(listen)
            if device.get("type") != "proxy" or parsed is None or values.proxy_address_problem(listen):
                continue  # pass 2 reports a bad address
            proto, address, ports = parsed
            clash = seen.add(proto, address, values.port_span(ports), field_path(("containers", cname, "devices", dname)))
            if clash:
                out.append(Found(_device_path(lab, container, cname, dname) + ("listen",),
                                 f"{listen} clashes with the listen address of {clash}"))
    return out


class _Intervals:
    """Disjoint port intervals, sorted, each with the owner that first held it."""

    def __init__(self) -> None:
        self.lows: list[int] = []
        self.items: list[tuple[int, int, str]] = []

    def find(self, low: int, high: int) -> str | None:
        i = bisect.bisect_right(self.lows, high)
        if i and self.items[i - 1][1] >= low:
            return self.items[i - 1][2]
        return None

    def merge(self, low: int, high: int, owner: str) -> None:
        """Add, joining what overlaps (the union keeps the earliest owner)."""
        i = bisect.bisect_left(self.lows, low)
        if i and self.items[i - 1][1] >= low:
            i -= 1
        j = i
        while j < len(self.items) and self.items[j][0] <= high:
            low, high, owner = min(low, self.items[j][0]), max(high, self.items[j][1]), self.items[i][2]
            j += 1
        self.items[i:j] = [(low, high, owner)]
        self.lows[i:j] = [low]


class _Listeners:
    """Listen addresses seen so far, per protocol: by address, wildcards, and all specific ones."""

    def __init__(self) -> None:
        self.by_address: dict[tuple[str, str], _Intervals] = {}
        self.wildcards: dict[str, _Intervals] = {}
        self.specific: dict[str, _Intervals] = {}

    def add(self, proto: str, address: str, span: tuple[int, int], owner: str) -> str | None:
        """The owner of an earlier listener this one clashes with (same address, or either a wildcard)."""
        low, high = span
        wild = self.wildcards.setdefault(proto, _Intervals())
        if address in WILDCARDS:
            clash = wild.find(low, high) or self.specific.setdefault(proto, _Intervals()).find(low, high)
            wild.merge(low, high, owner)
            return clash
        mine = self.by_address.setdefault((proto, address), _Intervals())
        clash = mine.find(low, high) or wild.find(low, high)
        mine.merge(low, high, owner)
        self.specific.setdefault(proto, _Intervals()).merge(low, high, owner)
        return clash


def _device_path(lab: Lab, container: Container, cname: str, dname: str) -> tuple:
    if dname in container.devices:
        return ("containers", cname, "devices", dname)
    owner = [p for p in container.profiles if p in lab.profiles and dname in lab.profiles[p].devices][-1]
    return ("profiles", owner, "devices", dname)


def _root_disks(lab: Lab, declared: Declared) -> list[Found]:
    if not _existing_known(declared, "profiles"):
        return []
    out = []
    for cname, container in lab.containers.items():
        if any(p in lab.existing.profiles for p in container.profiles) or not _complete(lab, declared, container):
            continue  # an existing profile may carry it (checked against live state in the plan)
        if not _profiles_known(declared, cname) or declared.failed.within(("containers", cname, "devices")):
            continue  # a device that failed may be the root disk
        if declared.profiles is not None and not has_root_disk(expanded_devices(lab, container)):
            out.append(Found(("containers", cname, "profiles"),
                             "no root disk: none of these profiles, nor the container, has a disk with path /"))
    return out


def _haproxy_refs(lab: Lab, declared: Declared) -> list[Found]:
    found = haproxy_spec.validate_haproxy(dict(lab.haproxy), set(declared.containers or ()),
                                          declared.failed.under(("haproxy",)), haproxy_spec.HintBudget(COMPARED))
    return [Found(("haproxy", *loc), message) for loc, message in found]


# --- Subnets -----------------------------------------------------------------------------------

class Subnet(NamedTuple):
    network: str  # the lab network's name
    key: str  # ipv4.address or ipv6.address
    written: str  # as in lab.yaml: 10.0.0.1/24
    net: Any  # ipaddress.IPv4Network or IPv6Network: 10.0.0.0/24


def _lab_subnets(lab: Lab) -> list[Subnet]:
    """Every subnet the lab's bridges take (valid addresses only: pass 2 reports the others)."""
    out = []
    for name, network in lab.networks.items():
        for key in ("ipv4.address", "ipv6.address"):
            value = network.config.get(key, "none")
            net = None if values.bridge_address_problem(key, value) else values.subnet(value)
            if net is not None:
                out.append(Subnet(name, key, value, net))
    return out


def _lab_subnet_overlaps(lab: Lab) -> list[Found]:
    """Two lab bridges on overlapping subnets: the host would route one of them into the other."""
    out, subnets = [], _lab_subnets(lab)
    for i, mine in enumerate(subnets):
        other = next((s for s in subnets[:i] if s.network != mine.network and s.net.version == mine.net.version
                      and s.net.overlaps(mine.net)), None)
        if other:
            out.append(Found(("networks", mine.network, "config", mine.key),
                             f"{mine.written} overlaps network {other.network!r} ({other.written}): give each"
                             " bridge a subnet of its own"))
    return out


def network_overlaps(lab: Lab, host_routes: list[str], lxd_networks: dict[str, str]) -> list[str]:
    """Lab bridges whose subnets overlap the host's routes or LXD's other networks. Pure.

    host_routes: `ip route` destinations such as "192.168.1.0/24 dev eno1" ("default" is skipped).
    lxd_networks: LXD network name -> its ipv4.address or ipv6.address (such as "10.0.3.1/24").
    A network of the lab's own name is itself (an earlier apply), and so are host routes to an LXD
    network's subnet or through a device of a lab network's name: those are not clashes.
    """
    theirs = {name: values.subnet(addr) for name, addr in lxd_networks.items()}
    out = []
    for name, key, written, net in _lab_subnets(lab):
        mine = f"network {name!r} ({key} {written})"
        out += [f"{mine} overlaps LXD network {other!r} ({lxd_networks[other]})"
                for other, other_net in sorted(theirs.items()) if other != name and other_net is not None
                and other_net.version == net.version and net.overlaps(other_net)]
        out += [f"{mine} overlaps the host route {route.strip()!r}"
                for route in host_routes if _route_clashes(route, net, lab, theirs)]
    return out


def _route_clashes(route: str, net: Any, lab: Lab, lxd_subnets: Mapping[str, Any]) -> bool:
    dest, device = values.route_subnet(route)
    if dest is None or dest.version != net.version or device in lab.networks:
        return False
    if dest in lxd_subnets.values():
        return False  # LXD's own bridges route their subnets; those are checked by name above
    return net.overlaps(dest)


# --- Pass 1 and loading ------------------------------------------------------------------------

SCALAR_TAGS = {"bool", "int", "float", "str", "none", "bytes"}


def _is_union_tag(part: Any) -> bool:
    """Pydantic's name of a union member in an error's loc (not a key of lab.yaml)."""
    return isinstance(part, str) and (part in SCALAR_TAGS or not re.fullmatch(r"[a-z_][a-z0-9_.]*", part))


def _losing_branches(errors: list[Any]) -> list[Any]:
    """Errors of a union's scalar member when a richer member (a model, a checked string) also failed.

    `health_check: {bogus: 1}` is a mapping: "should be a valid boolean" would only confuse.
    """
    rich = {e["loc"][:i] for e in errors for i, p in enumerate(e["loc"]) if _is_union_tag(p)
            and p not in SCALAR_TAGS}
    return [e for e in errors if any(p in SCALAR_TAGS and e["loc"][:i] in rich for i, p in enumerate(e["loc"]))]


def _problem(doc: Document, path: tuple, message: str, at_key: bool = False, line: int = 0) -> Problem:
    """A Problem that prints as one harmless line: a key or value with a control character is
    shown escaped (a terminal would obey an escape sequence; a newline would split the report).

    A line inside a value is located in the file when the value is a literal block (`|`), and
    named in the message otherwise."""
    place = doc.locate_line(path, line) if line else None
    if line and place is None:
        message = f"template line {line}: {message}"
    return Problem(place or doc.locate(path, at_key), path, _printable(message))  # the path: escaped by field_path()


def _printable(text: str) -> str:
    return values.UNSAFE.sub(lambda m: repr(m.group())[1:-1], text)


def _pydantic_problems(doc: Document, errors: list[Any], prefix: tuple, model: type[BaseModel]) -> list[Problem]:
    """Pydantic's errors (a ValidationError's errors(), which it builds anew at each call) as Problems."""
    problems: list[Problem] = []
    losing = _losing_branches(errors)
    for item in errors:
        if item in losing:
            continue
        path = _data_path(doc.data, prefix + tuple(item["loc"]))
        message = item["msg"].removeprefix("Value error, ")
        written = as_written(item.get("input"))
        if item["type"] == "string_type" and written is not None:
            message += f'; quote it: "{written}"'  # YAML read 1.10 as a number
        at_key = item["type"] == "extra_forbidden" or item["loc"][-1:] == ("[key]",)
        if item["type"] == "extra_forbidden":  # a "did you mean" costs: only for as many as are shown
            hint = _unknown_field_hint(model, prefix, path) if len(problems) < HINTED else ""
            message = "unknown field" + hint
        problems.append(_problem(doc, path, message, at_key))
    return problems


HINTED = 200  # problems that get a "did you mean": bounded time whatever the file
COMPARED = 100_000  # names the "did you mean" of unknown containers may compare, per pass


def _unknown_field_hint(model: type[BaseModel], prefix: tuple, path: tuple) -> str:
    inner = path[len(prefix):]
    if model is haproxy_spec.HAProxy and haproxy_spec.unknown_field_hint(inner):
        return "; " + haproxy_spec.unknown_field_hint(inner)
    fields = _fields_at(model, inner[:-1])
    return _suggest(str(inner[-1]), fields) if inner else ""


def _fields_at(tp: Any, path: tuple) -> list[str]:
    """The field names of the model at `path` inside model `tp` (dict keys and list indexes step in)."""
    for part in path:
        tp = _model_in(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
            tp = field.annotation if field else None
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    tp = _model_in(tp)
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return []
    return [f.alias or n for n, f in tp.model_fields.items()]


def _model_in(tp: Any) -> Any:
    """Annotated[X, ...] -> X; X | None and bool | Model -> the model (or X) of the union."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [_model_in(a) for a in typing.get_args(tp) if a is not type(None)]
        rich = [m for m in members if typing.get_origin(m) in (dict, list)
                or (isinstance(m, type) and issubclass(m, BaseModel))]
        return (rich or members)[0]
    return tp


def _data_path(data: Any, loc: tuple) -> tuple:
    """Pydantic's loc without its internal steps (union members, validator names, [key])."""
    path: list = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or \
                (isinstance(node, list) and isinstance(part, int) and part < len(node)):
            node = node[part]
            path.append(part)
        elif isinstance(part, str) and not _is_union_tag(part) and not part.startswith("["):
            path.append(part)  # a missing field, where it would be
            node = None
    return tuple(path)


Entries = dict[str, dict[str, Any]]  # table -> name -> model

HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
MAX_NAMED = 100_000  # (host, container) pairs files are read for: a hint, in bounded time and memory


def _hosts_served(data: Mapping, containers: set[str]) -> haproxy_spec.Serving:
    """Who serves a host name, as lab.yaml (as read) says: the containers its routes lead to, else those
    whose files name it.  For the hint of a server written as a host name; worked out when first asked."""
    @functools.cache
    def tables() -> tuple[dict[str, haproxy_spec.Served], dict[str, list[str]]]:
        return haproxy_spec.routed_hosts(data.get("haproxy"), containers), _hosts_in_files(data.get("containers"))

    def serving(host: str) -> haproxy_spec.Served | None:
        routed, named = tables()
        found = routed.get(host.lower())
        if found is None and named.get(host.lower()):
            found = haproxy_spec.Served(tuple(named[host.lower()]))
        return found
    return serving


def _hosts_in_files(containers: Any) -> dict[str, list[str]]:
    """host name (lowercase) -> the containers whose files' content or template names it (the first
    MAX_NAMED pairs); a text repeated by YAML aliases is read once."""
    hosts_of: dict[int, set[str]] = {}
    out: dict[str, dict[str, None]] = {}
    pairs = 0
    for cname, text in _file_texts(containers):
        if id(text) not in hosts_of:
            hosts_of[id(text)] = {m.group().lower() for m in itertools.islice(HOST_NAME.finditer(text), MAX_NAMED)}
        for host in itertools.islice(hosts_of[id(text)], MAX_NAMED - pairs):
            out.setdefault(host, {})[cname] = None
            pairs += 1
        if pairs >= MAX_NAMED:
            break
    return {host: list(names) for host, names in out.items()}


def _file_texts(containers: Any) -> Iterable[tuple[str, str]]:
    """(container, text) of each file's content or template, in lab.yaml as read (not yet validated)."""
    for cname, container in containers.items() if isinstance(containers, dict) else ():
        files = container.get("files") if isinstance(container, dict) else None
        for spec in files.values() if isinstance(files, dict) else ():
            for text in (spec.get("content"), spec.get("template")) if isinstance(spec, dict) else ():
                if isinstance(text, str):
                    yield str(cname), text


def _validate_entries(doc: Document, data: Mapping) -> tuple[Entries, Entries, PathSet, list[Problem]]:
    """Pass 1: each entry of each table on its own.

    Returns the valid entries, the invalid ones salvaged (`_salvage`), the parts that failed in them,
    and every problem of the invalid ones.
    """
    containers = data.get("containers")
    names = {str(k) for k in containers} if isinstance(containers, dict) else set()
    context = {"containers": names, "serving": _hosts_served(data, names), "hints": haproxy_spec.HintBudget(COMPARED)}
    valid: Entries = {table: {} for table in TABLES}
    salvaged: Entries = {table: {} for table in TABLES}
    failed: set[tuple] = set()
    problems: list[Problem] = []
    for table, model in TABLES.items():
        entries = data.get(table)
        for name, entry in entries.items() if isinstance(entries, dict) else ():
            try:
                valid[table][str(name)] = model.model_validate(entry, context=context)
            except ValidationError as err:
                errors = err.errors()
                problems += _pydantic_problems(doc, errors, (table, name), model)
                salvage = _salvage(model, entry, errors, context, (table, str(name)))
                if salvage is not None:
                    salvaged[table][str(name)] = salvage.model
                    failed |= salvage.failed
    return valid, salvaged, PathSet(failed), problems


# A part of an entry (or of the top level) that fails pass 1 is left out, or stood in for where its
# place must stay, so that pass 2 and 3 check all the rest.  A pattern's step "*" is any key or index,
# a tuple any of its keys.
#
# Parts whose fields are judged together (a device's keys, an ACL rule's, an access rule's): when
# anything inside one fails, the whole part fails, so that no check sees it half there.
WHOLE_PARTS: tuple[tuple, ...] = (
    ("*", "*", "devices", "*"),
    ("acls", "*", ("ingress", "egress"), "*"),
    ("haproxy", "*", "frontends", "*", ("access", "routes"), "*"),
    ("haproxy", "*", "backends", "*", "servers", "*"),
    ("haproxy", "*", "frontends", "*", "tls"),
    ("haproxy", "*", "conditions", "*"),
    ("haproxy", "*", "stats"),
)
# Valid, harmless values that stand in for a failed part whose place must stay: the entry keeps its
# names (a file's path, a config key, a backend's name) and its lists their indexes, for the checks of
# everything else.  A failed part without one is left out: a field then has its default.
STAND_INS: tuple[tuple[tuple, Any], ...] = (
    (("lab",), "invalid"),
    (("project", "config", "*"), "invalid"),
    (("containers", "*", "image"), "invalid"),
    (("*", "*", ("config", "vars"), "*"), "invalid"),
    (("*", "*", "devices", "*"), {"type": "none"}),
    (("containers", "*", "files", "*"), {"type": "directory"}),
    (("containers", "*", "services", "*"), {}),
    (("acls", "*", ("ingress", "egress"), "*"), {"action": "allow"}),
    (("haproxy", "*", "frontends", "*"), {"bind": ":1"}),
    (("haproxy", "*", "frontends", "*", "bind"), ":1"),
    (("haproxy", "*", "frontends", "*", "access", "*"), {"action": "deny"}),
    (("haproxy", "*", "frontends", "*", "routes", "*"), {"host": "invalid", "backend": "invalid"}),
    (("haproxy", "*", "backends", "*"), {}),
    (("haproxy", "*", "backends", "*", "servers", "*"), {"container": "invalid"}),
    (("haproxy", "*", "conditions", "*"), {"method": "GET"}),
)
SALVAGE_ROUNDS = 8  # each round replaces what failed: a part, then what held it (nesting is shallow)


class Salvaged(NamedTuple):
    """An entry that failed pass 1, without what failed in it."""

    model: BaseModel
    failed: frozenset[tuple]  # the parts left out or stood in for, from the top of the document


def _salvage(model: type[BaseModel], entry: Any, errors: list[Any], context: dict,
             where: tuple) -> Salvaged | None:
    """The entry (at `where`) with each part that failed left out or stood in for, and those parts.

    Checks never judge a failed part, nor what depends on it (Declared.failed says which): a stand-in
    or a default is no fact.  None when the entry itself failed (not a mapping, say).
    """
    if not isinstance(entry, dict):
        return None
    rest, copied, failed = dict(entry), set[int](), set[tuple]()
    for _ in range(SALVAGE_ROUNDS):
        found = [_failed_part(rest, where, _data_path(rest, tuple(e["loc"]))) for e in errors]
        parts = {part for part in found if part is not None}
        if len(parts) < len(set(found)) or not parts - failed:
            return None  # the entry itself failed, or a stand-in did
        for part in sorted(parts, key=len):  # a part inside another one replaced is gone with it
            if not any(part[:end] in failed for end in range(len(part))):
                _replace(rest, part[len(where):], _stand_in(part), copied)
                failed.add(part)
        try:
            return Salvaged(model.model_validate(rest, context=context), frozenset(failed))
        except ValidationError as again:
            errors = again.errors()
    return None


def _matches(path: tuple, pattern: tuple) -> bool:
    return len(path) == len(pattern) and all(
        step == "*" or part == step or (isinstance(step, tuple) and part in step) for part, step in zip(path, pattern))


def _by_length(table: Iterable[Any], pattern: Callable[[Any], tuple]) -> dict[int, list[Any]]:
    """A table of patterns by their length: a path is matched against those of its own length only."""
    out: dict[int, list[Any]] = {}
    for row in table:
        out.setdefault(len(pattern(row)), []).append(row)
    return out


_WHOLE_PARTS = _by_length(WHOLE_PARTS, lambda pattern: pattern)
_STAND_INS = _by_length(STAND_INS, lambda row: row[0])


def _failed_part(entry: dict, where: tuple, path: tuple) -> tuple | None:
    """What fails with an error at `path` in the entry: the whole part holding it, or else the deepest
    mapping item (a field, a file, a config key) on its way that is written."""
    node: Any = entry
    deepest = None
    for end, step in enumerate(path, start=1):
        if isinstance(node, dict) and step in node:
            deepest = where + path[:end]
        elif not (isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)):
            break
        if any(_matches(where + path[:end], pattern) for pattern in _WHOLE_PARTS.get(len(where) + end, ())):
            return where + path[:end]
        node = node[step]
    return deepest


_LEAVE_OUT = object()


def _stand_in(part: tuple) -> Any:
    stand_ins = _STAND_INS.get(len(part), ())
    return next((copy.deepcopy(value) for pattern, value in stand_ins if _matches(part, pattern)), _LEAVE_OUT)


def _replace(entry: dict, path: tuple, value: Any, copied: set[int]) -> None:
    """Put `value` at `path` in the entry (or delete it: _LEAVE_OUT), copying what holds it first: the
    document's data is never changed, and a value repeated by YAML aliases is changed at one place."""
    node: Any = entry
    for step in path[:-1]:
        child = node[step]
        if id(child) not in copied:
            child = dict(child) if isinstance(child, dict) else list(child)
            node[step] = child
            copied.add(id(child))
        node = child
    if value is _LEAVE_OUT:
        if isinstance(node, dict):
            del node[path[-1]]
    else:
        node[path[-1]] = value


def _validate_shell(doc: Document, data: Mapping) -> tuple[Lab, PathSet, list[Problem]]:
    """The top level without the tables' entries; on errors, a Lab of what did validate (`_salvage`).

    Returns the Lab, the parts that failed (their values and names cannot be trusted), the problems.
    """
    shell = {k: ({} if k in TABLES and isinstance(v, dict) else v) for k, v in data.items()}
    try:
        return Lab.model_validate(shell), NO_PATHS, []
    except ValidationError as err:
        errors = err.errors()
        problems = _pydantic_problems(doc, errors, (), Lab)
        salvage = _salvage(Lab, shell, errors, {}, ())
        if salvage is None:  # never seen: every key then counts as failed
            return Lab.model_validate({"lab": "invalid"}), PathSet((k,) for k in shell), problems
        return typing.cast(Lab, salvage.model), PathSet(salvage.failed), problems


def _names(data: Mapping, table: str, failed: PathSet) -> frozenset[str] | None:
    entries = data.get(table, {})
    return frozenset(map(str, entries)) if isinstance(entries, dict) and not failed.at((table,)) else None


def check_lab(doc: Document, folder: Path) -> tuple[Lab, list[Problem]]:
    """Every problem of the document (all three passes), and the Lab of its valid entries."""
    data = without_extensions(doc.data)
    valid, salvaged, failed_entries, problems = _validate_entries(doc, data)
    shell, failed_shell, shell_problems = _validate_shell(doc, data)
    failed = PathSet(failed_entries.paths | failed_shell.paths)
    lab = shell.model_copy(update=valid)
    everything = shell.model_copy(update={table: valid[table] | salvaged[table] for table in TABLES})
    declared = Declared(**{table: _names(data, table, failed) for table in TABLES}, failed=failed)
    found = _name_problems(data) + _value_problems(everything, folder, failed)
    found += _reference_problems(everything, lab, declared)
    # What is said about a failed part (a stand-in's own values) is no fact; a bad name (a key) is.
    found = [f for f in found if f.at_key or not failed.at(f.path)]
    return lab, shell_problems + problems + [_problem(doc, *f) for f in found]


def load_lab(path: str | Path, env: Mapping[str, str] | None = None,
             override: str | Path | None = None) -> tuple[Lab, Document]:
    """Load and validate lab.yaml and its override (lab.override.yaml beside it, or `override` instead);
    raise SourceError with every problem.

    A problem in reading (a duplicate key, an unset variable) stops nothing but the checks of the value
    it is about.  `source:` files are read relative to the lab file's folder, as plan and apply read them.
    """
    path = Path(path)
    doc, loaded = read_documents([path, Path(override)] if override else lab_files(path), env)
    if doc is None:
        raise SourceError(loaded)
    lab, checked = check_lab(doc, path.resolve().parent)
    unreliable = unread(loaded)  # a value not read as written: what the checks say of it is no news
    problems = loaded + [p for p in checked if not unreliable.at(p.path)]
    if problems:
        raise SourceError(problems)
    return lab, doc


def json_schema() -> dict:
    """The JSON Schema of lab.yaml as written, for editors (schemas/lab.schema.json is generated from it):
    the models' own, with ${VAR} placeholders accepted where they may stand (schema.py)."""
    schema = editor_schema.with_placeholders(Lab.model_json_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "reconciler lab.yaml"
    return schema


def override_json_schema() -> dict:
    """The JSON Schema of an override (schemas/lab.override.schema.json): a partial lab."""
    return editor_schema.partial(json_schema()) | {"title": "reconciler lab.override.yaml"}


if __name__ == "__main__":
    import json
    import sys
    made = override_json_schema() if sys.argv[1:] == ["--override"] else json_schema()
    print(json.dumps(made, indent=2, sort_keys=True))
