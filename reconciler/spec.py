"""The models of lab.yaml, and loading it with every error at once as FILE:LINE:COL.

Values that LXD stores as strings (config keys, device keys) are normalised to LXD's
string form here, so that the rest of the program compares like with like.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import haproxy as haproxy_spec
from .provision import FileSpec, ServiceSpec, validate_path
from .source import Document, Problem, SourceError, as_written, load_document

# The image servers `remote:alias` may name, as the lxc client knows them.
REMOTES = {"images": "https://images.linuxcontainers.org",
           "ubuntu": "https://cloud-images.ubuntu.com/releases",
           "ubuntu-daily": "https://cloud-images.ubuntu.com/daily"}
RESERVED_PREFIXES = ("volatile.", "image.", "user.reconciler.")


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


LxdValue = Annotated[str, BeforeValidator(lxd_string)]
CONFIG_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
INSTANCE_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
NETWORK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,14}$")  # a Linux interface name
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LAB_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


Config = Annotated[dict[str, LxdValue], Field(description="LXD config keys; values become strings")]
Device = Annotated[dict[str, LxdValue], Field(description="an LXD device: `type` and its keys")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Connection(Strict):
    """Where the LXD daemon is."""

    socket: str | None = Field(None, description="unix socket path; default: $LXD_DIR, /var/lib/lxd, snap")
    project: str = Field("default", description="LXD project the lab lives in")


class Network(Strict):
    """A managed LXD network (bridge) the lab owns."""

    type: Literal["bridge"] = "bridge"
    description: str = ""
    config: Config = {}



class Profile(Strict):
    """An LXD profile the lab owns."""

    description: str = ""
    config: Config = {}
    devices: dict[str, Device] = {}



class Container(Strict):
    """An LXD container the lab owns, and what runs inside it."""

    image: str = Field(description="a local image alias, or remote:alias (e.g. images:debian/12)")
    type: Literal["container", "virtual-machine"] = "container"
    description: str = ""
    profiles: list[str] = Field(["default"], description="applied in order; later ones win")
    config: Config = {}
    devices: dict[str, Device] = {}
    state: Literal["running", "stopped"] = "running"
    packages: list[str] = Field([], description="installed with the container's package manager")
    services: dict[str, ServiceSpec] = Field({}, description="systemd units enabled and running")
    files: dict[str, FileSpec] = Field({}, description="absolute path -> file or directory")
    vars: dict[str, LxdValue] = Field({}, description="values templates use as {{ vars.NAME }}")


    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not re.match(r"^([A-Za-z0-9][A-Za-z0-9_.-]*:)?[A-Za-z0-9][A-Za-z0-9_./-]*$", value):
            raise ValueError(f"{value!r} is not an image alias or remote:alias")
        remote, sep, _ = value.partition(":")
        if sep and remote not in REMOTES:
            raise ValueError(f"unknown image remote {remote!r} (known: {', '.join(sorted(REMOTES))})")
        return value

    @field_validator("packages")
    @classmethod
    def _packages(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9+._:-]*$", name):
                raise ValueError(f"{name!r} is not a package name")
        return value


class Existing(Strict):
    """LXD objects the lab uses but does not own: never changed or deleted."""

    profiles: list[str] = ["default"]
    networks: list[str] = []


class Lab(Strict):
    """A lab: everything in one lab.yaml."""

    lab: str = Field(description="the lab's name; tags every object it creates")
    lxd: Connection = Connection()
    existing: Existing = Existing()
    networks: dict[str, Network] = {}
    profiles: dict[str, Profile] = {}
    containers: dict[str, Container] = {}
    haproxy: dict[str, haproxy_spec.HAProxy] = Field({}, description="HAProxy, keyed by the container running it")

    @model_validator(mode="before")
    @classmethod
    def _extensions(cls, data: Any) -> Any:
        """Top-level keys starting with x- are free: a place for YAML anchors, as in Compose."""
        return {k: v for k, v in data.items() if not str(k).startswith("x-")} if isinstance(data, dict) else data

    @field_validator("lab")
    @classmethod
    def _lab(cls, value: str) -> str:
        if not LAB_NAME.match(value):
            raise ValueError("lowercase letters, digits and '-', at most 63")
        return value


# --- Cross-references ------------------------------------------------------------------

def _suggest(name: str, known: set[str]) -> str:
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


Found = list[tuple[tuple, str]]  # (path in lab.yaml, message)


def _name_problems(lab: Lab) -> Found:
    """Names and keys LXD would refuse, reported at the key itself."""
    out: Found = []
    tables = [("networks", lab.networks, NETWORK_NAME), ("profiles", lab.profiles, PROFILE_NAME),
              ("containers", lab.containers, INSTANCE_NAME)]
    for section, table, pattern in tables:
        for name, obj in table.items():
            if not pattern.match(str(name)):
                out.append(((section, name), f"{name!r} is not a valid {section[:-1]} name"))
            out += _config_problems((section, name, "config"), obj.config)
            out += _device_problems((section, name, "devices"), getattr(obj, "devices", {}))
    return out


def _config_problems(path: tuple, config: Mapping[str, str]) -> Found:
    out: Found = []
    for key in config:
        if not CONFIG_KEY.match(key):
            out.append((path + (key,), f"invalid config key {key!r}"))
        elif key.startswith(RESERVED_PREFIXES):
            out.append((path + (key,), "volatile.*, image.* and user.reconciler.* keys belong to LXD"
                        " or to reconciler and cannot be set"))
    return out


def _device_problems(path: tuple, devices: Mapping[str, Mapping[str, str]]) -> Found:
    out: Found = []
    for name, device in devices.items():
        if not DEVICE_NAME.match(str(name)):
            out.append((path + (name,), f"{name!r} is not a valid device name"))
        if "type" not in device:
            out.append((path + (name,), "a device needs a `type` (nic, disk, proxy, ...)"))
    return out


def _reference_problems(lab: Lab) -> list[tuple[tuple, str]]:
    return (_profile_refs(lab) + _network_refs(lab) + _proxy_listen_clashes(lab)
            + _root_disks(lab) + _haproxy_refs(lab) + _provisioning_problems(lab))


TEMPLATE_FACT = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


def _provisioning_problems(lab: Lab) -> Found:
    out: Found = []
    for cname, c in lab.containers.items():
        for path, spec in c.files.items():
            where = ("containers", cname, "files", path)
            problem = validate_path(path)
            if problem:
                out.append((where, problem))
            for fact in TEMPLATE_FACT.findall(spec.template or ""):
                if not _known_fact(lab, c, fact):
                    out.append((where + ("template",), f"unknown template value {{{{ {fact} }}}} (known: lab.name,"
                                " container.name, container.address, containers.NAME.address, vars.NAME)"))
        for sname, service in c.services.items():
            for i, watched in enumerate(service.watches):
                if watched not in c.files:
                    out.append((("containers", cname, "services", sname, "watches", i),
                                f"{watched} is not one of this container's files"))
    return out


def _known_fact(lab: Lab, container: Container, fact: str) -> bool:
    if fact in ("lab.name", "container.name", "container.address"):
        return True
    if fact.startswith("vars."):
        return fact[5:] in container.vars
    parts = fact.split(".")
    return len(parts) == 3 and parts[0] == "containers" and parts[1] in lab.containers and parts[2] == "address"


def _profile_refs(lab: Lab) -> list[tuple[tuple, str]]:
    known = set(lab.profiles) | set(lab.existing.profiles)
    out = []
    for cname, container in lab.containers.items():
        for i, name in enumerate(container.profiles):
            if name not in known:
                out.append((("containers", cname, "profiles", i),
                            f"unknown profile {name!r}{_suggest(name, known)}"
                            " (declare it under profiles:, or list it under existing.profiles)"))
        if len(set(container.profiles)) != len(container.profiles):
            out.append((("containers", cname, "profiles"), "a profile is listed twice"))
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


def _network_refs(lab: Lab) -> list[tuple[tuple, str]]:
    known = set(lab.networks) | set(lab.existing.networks)
    out = []
    for path, device in _devices_everywhere(lab):
        network = _nic_network(device)
        if network is not None and network not in known:
            key = "network" if "network" in device else "parent"
            out.append((path + (key,), f"unknown network {network!r}{_suggest(network, known)}"
                        " (declare it under networks:, or list it under existing.networks)"))
    return out


def listen_address(listen: str) -> tuple[str, str, str] | None:
    """'tcp:127.0.0.1:80' -> ('tcp', '127.0.0.1', '80'); None if it is not of that form."""
    match = re.match(r"^(tcp|udp):(\[[^\]]+\]|[^:]+):(\d+(?:-\d+)?)$", listen)
    return match.groups() if match else None


WILDCARDS = ("0.0.0.0", "[::]", "*")


def _proxy_listen_clashes(lab: Lab) -> list[tuple[tuple, str]]:
    """Two proxy devices on one port (LXD checks this only when the second one starts)."""
    seen: dict[tuple[str, int], list[tuple[str, str]]] = {}  # (proto, port) -> [(address, owner)]
    out = []
    for cname, container in lab.containers.items():
        for dname, device in expanded_devices(lab, container).items():
            if device.get("type") != "proxy" or "listen" not in device:
                continue
            where = _device_path(lab, container, cname, dname) + ("listen",)
            parsed = listen_address(device["listen"])
            if parsed is None:
                out.append((where, "listen must be tcp:ADDRESS:PORT or udp:ADDRESS:PORT"))
                continue
            clash = _first_clash(seen, *parsed)
            if clash:
                out.append((where, f"{device['listen']} clashes with the listen address of {clash}"))
            for port in _ports(parsed[2]):
                seen.setdefault((parsed[0], port), []).append((parsed[1], f"containers.{cname}.devices.{dname}"))
    return out


def _first_clash(seen: dict, proto: str, address: str, ports: str) -> str | None:
    """The owner of an earlier listener on one of these ports: same address, or either a wildcard."""
    for port in _ports(ports):
        for other, owner in seen.get((proto, port), []):
            if other == address or other in WILDCARDS or address in WILDCARDS:
                return owner
    return None


def _ports(ports: str) -> range:
    low, _, high = ports.partition("-")
    return range(int(low), min(int(high or low), int(low) + 1023) + 1)


def _device_path(lab: Lab, container: Container, cname: str, dname: str) -> tuple:
    if dname in container.devices:
        return ("containers", cname, "devices", dname)
    owner = [p for p in container.profiles if p in lab.profiles and dname in lab.profiles[p].devices][-1]
    return ("profiles", owner, "devices", dname)


def _root_disks(lab: Lab) -> list[tuple[tuple, str]]:
    out = []
    for cname, container in lab.containers.items():
        if any(p in lab.existing.profiles for p in container.profiles):
            continue  # an existing profile may carry it; checked against live state in the plan
        if not has_root_disk(expanded_devices(lab, container)):
            out.append((("containers", cname, "profiles"),
                        "no root disk: none of these profiles, nor the container, has a disk with path /"))
    return out


def _haproxy_refs(lab: Lab) -> list[tuple[tuple, str]]:
    found = haproxy_spec.validate_haproxy(dict(lab.haproxy), set(lab.containers))
    return [(("haproxy",) + tuple(loc), message) for loc, message in found]


# --- Loading -----------------------------------------------------------------------------

def _pydantic_problems(doc: Document, err: ValidationError) -> list[Problem]:
    problems = []
    for item in err.errors():
        path = _data_path(doc.data, item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        written = as_written(item.get("input"))
        if item["type"] == "string_type" and written is not None:
            message += f'; quote it: "{written}"'  # YAML read 1.10 as a number
        at_key = item["type"] == "extra_forbidden"
        if at_key:
            message = "unknown field"
        problems.append(doc.problem(path, message, at_key))
    return problems


def _data_path(data: Any, loc: tuple) -> tuple:
    """Pydantic's loc without its internal steps (union tags, validator names)."""
    path: list = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            path.append(part)
        elif isinstance(node, dict) and isinstance(part, str) and not part.startswith(("function-", "[")):
            path.append(part)
            node = None
    return tuple(path)


def load_lab(path: str | Path, env: Mapping[str, str] | None = None) -> tuple[Lab, Document]:
    """Load and validate lab.yaml (and its override); raise SourceError with every problem."""
    doc = load_document(Path(path), env)
    try:
        lab = Lab.model_validate(doc.data)
    except ValidationError as err:
        raise SourceError(_pydantic_problems(doc, err)) from None
    problems = [doc.problem(p, m, at_key=True) for p, m in _name_problems(lab)]
    problems += [doc.problem(p, m) for p, m in _reference_problems(lab)] if not problems else []
    if problems:
        raise SourceError(problems)
    return lab, doc


def json_schema() -> dict:
    """The JSON Schema of lab.yaml, for editors (schemas/lab.schema.json is generated from it)."""
    schema = Lab.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "reconciler lab.yaml"
    return schema


if __name__ == "__main__":
    import json
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
