"""The models of lab.yaml (pydantic), the patterns their names and keys follow, and the JSON Schema
they make (schemas/lab.schema.json)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from .. import haproxy as haproxy_spec
from .. import network_acl, values
from .. import schema as editor_schema
from ..fields import (
    CONFIG_KEY,
    VALUE_SCHEMA,
    Config,
    LxdValue,
    Strict,
    config_schema,
    keyed,
    name_schema,
)
from ..kinds import OBJECT_KINDS, check_tables
from ..kinds.contract import LabTable
from ..network_acl import ACL_NAME, NetworkAcl
from ..provision import PATH, SERVICE_NAME, FileSpec, ServiceSpec

# The image servers `remote:alias` may name, as the lxc client knows them.
REMOTES = {"images": "https://images.linuxcontainers.org",
           "ubuntu": "https://cloud-images.ubuntu.com/releases",
           "ubuntu-daily": "https://cloud-images.ubuntu.com/daily"}

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


# --- Schema fragments (schemas/lab.schema.json), from the same patterns the checks use --------

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
    "type": "object", "required": ["type"], "propertyNames": name_schema(CONFIG_KEY),
    "additionalProperties": VALUE_SCHEMA, "properties": {"type": {"enum": list(values.DEVICE_TYPES)}},
    "allOf": [{"if": {"properties": {"type": {"const": "proxy"}}, "required": ["type"]}, "then": PROXY_SCHEMA}],
    "description": "an LXD device: `type` and its keys",
}
BRIDGE_CONFIG = {"ipv4.address": {"type": "string", "pattern": values.anchored(values.IPV4_CIDR)},
                 "ipv6.address": {"type": "string", "pattern": values.anchored(values.IPV6_CIDR)},
                 "ipv4.dhcp.ranges": {"type": "string", "pattern": values.anchored(values.IPV4_RANGES),
                                      "description": "FIRST-LAST ranges, comma-separated, inside the subnet"},
                 "security.acls": {"type": "string", "description": "network ACLs, comma-separated"},
                 **{key: {"enum": list(network_acl.ACTIONS)} for key in network_acl.DEFAULT_ACTION_KEYS},
                 **{key: values.BOOL_SCHEMA for key in values.BRIDGE_BOOLS + network_acl.DEFAULT_LOGGED_KEYS}}


Device = Annotated[dict[str, LxdValue], WithJsonSchema(DEVICE_SCHEMA)]
Devices = Annotated[dict[str, Device], WithJsonSchema({
    "type": "object", "propertyNames": name_schema(DEVICE_NAME), "additionalProperties": DEVICE_SCHEMA})]


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


class Connection(Strict):
    """Where the LXD daemon is."""

    socket: Annotated[str, values.Matching(PATH, "an absolute path")] | None = Field(
        None, description="unix socket path; default: $LXD_DIR, $INCUS_DIR, then LXD's usual sockets"
        " (/var/lib/lxd, snap) and Incus's (/var/lib/incus, /run/incus): the first that exists")
    daemon: Literal["lxd", "incus"] | None = Field(
        None, description="the daemon the lab lives on: only its sockets are tried, and another one found is"
        " refused; default: the first socket found (LXD's first)")
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
    config: Annotated[dict[str, LxdValue], WithJsonSchema(config_schema(BRIDGE_CONFIG))] = Field(
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
    config: Annotated[dict[str, LxdValue], WithJsonSchema(config_schema(
        {key: values.BOOL_SCHEMA for key in CONTAINER_BOOLS}))] = Field({}, description="LXD config keys;"
                                                                        " values become strings")
    devices: Devices = {}
    state: Literal["running", "stopped"] = "running"
    packages: list[PackageName] = Field([], description="installed with the container's package manager")
    services: dict[str, ServiceSpec] = keyed(SERVICE_NAME, "systemd units enabled and running")
    files: dict[str, FileSpec] = keyed(PATH, "absolute path -> file or directory")
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


class ExistingCore(Strict):
    """LXD objects the lab uses but does not own: never changed or deleted."""

    profiles: list[ProfileRef] = ["default"]
    networks: list[NetworkRef] = []
    acls: list[AclRef] = []


class AdoptCore(Strict):
    """Objects that exist without any lab's tag and that this lab takes over as they are (what
    `reconcile import` writes): plan shows them as adoptions, apply tags them."""

    networks: list[NetworkRef] = []
    profiles: list[ProfileRef] = []
    containers: list[Annotated[str, values.Matching(INSTANCE_NAME, "a container name")]] = []


# --- The kinds' own tables: each kind module that brings a table declares it (LAB_TABLE), and the
# models below get one field for it, in registry order after the core's.
KIND_TABLES: dict[str, LabTable] = {m.TABLE: m.LAB_TABLE for m in OBJECT_KINDS if m.LAB_TABLE is not None}
Model = TypeVar("Model", bound=BaseModel)


def _completed(core: type[Model], fields: Mapping[str, tuple[Any, Any]]) -> type[Model]:
    """`core` with the kinds' fields, named as `core` without its "Core" (the name the schema shows)."""
    return create_model(core.__name__.removesuffix("Core"), __base__=core, __module__=__name__,
                        __doc__=core.__doc__, **fields)  # type: ignore[call-overload]


if TYPE_CHECKING:
    Existing = ExistingCore
    Adopt = AdoptCore
else:
    Existing = _completed(ExistingCore, {table: (list[t.existing[0]], list(t.existing[1]))
                                         for table, t in KIND_TABLES.items() if t.existing is not None})
    Adopt = _completed(AdoptCore, {table: (list[t.adopt], []) for table, t in KIND_TABLES.items()
                                   if t.adopt is not None})


class Checkpoints(Strict):
    """How many automatic checkpoints (`apply --checkpoint auto|always`) the lab keeps."""

    keep: StrictInt = Field(3, ge=1, le=100, description="automatic checkpoints kept, the oldest pruned first;"
                            " one taken by hand is never pruned (`apply --keep-checkpoints N` overrides it)")


class LabCore(Strict):
    """A lab: everything in one lab.yaml."""

    model_config = ConfigDict(defer_build=True, json_schema_extra={"patternProperties": {"^x-": {}}})

    lab: str = Field(description="the lab's name; tags every object it creates",
                     json_schema_extra={"pattern": values.anchored(LAB_NAME)})
    lxd: Connection = Connection.model_validate({})
    project: OwnedProject | None = Field(None, description="the lab owns lxd.project: created when absent,"
                                         " deleted by destroy; without this section the project must exist")
    existing: Existing = Existing.model_validate({})
    adopt: Adopt = Adopt.model_validate({})
    networks: dict[str, Network] = keyed(NETWORK_NAME, "managed bridges the lab owns")
    profiles: dict[str, Profile] = keyed(PROFILE_NAME, "profiles the lab owns")
    containers: dict[str, Container] = keyed(INSTANCE_NAME, "containers the lab owns")
    acls: dict[str, NetworkAcl] = keyed(ACL_NAME, "network ACLs the lab owns (security.acls of networks name them)")
    haproxy: dict[str, haproxy_spec.HAProxy] = keyed(INSTANCE_NAME, "HAProxy, keyed by the container"
                                                      " running it")
    checkpoints: Checkpoints = Checkpoints.model_validate({})

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


if TYPE_CHECKING:
    Lab = LabCore  # a kind's table is read through its own module's typed accessor (storage_pool.pools(lab))
else:
    Lab = _completed(LabCore, {table: (dict[str, t.model], keyed(t.key, t.description))
                               for table, t in KIND_TABLES.items()})


def without_extensions(data: Any) -> Any:
    return {k: v for k, v in data.items() if not str(k).startswith("x-")} if isinstance(data, dict) else data


TABLES: dict[str, type[BaseModel]] = {"acls": NetworkAcl, "networks": Network, "profiles": Profile,
                                      "containers": Container, "haproxy": haproxy_spec.HAProxy,
                                      **{table: t.model for table, t in KIND_TABLES.items()}}
TABLE_NAMES = {"acls": (ACL_NAME, "network ACL"), "networks": (NETWORK_NAME, "network"),
               "profiles": (PROFILE_NAME, "profile"), "containers": (INSTANCE_NAME, "container"),
               **{table: (t.key, t.noun) for table, t in KIND_TABLES.items()}}
# What a failed part of a kind's entry is stood in for (salvage.py), from the top of the document.
KIND_STAND_INS = tuple(((table, "*", *path), value) for table, t in KIND_TABLES.items() for path, value in t.stand_ins)
check_tables(Lab.model_fields)


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
