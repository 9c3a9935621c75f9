"""lab.yaml (a Lab) -> the desired LabState.  Pure, but for reading `source:` files.

HAProxy sections become ordinary packages, files and services of their container here,
so the diff, plan and apply treat them like anything a user wrote by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from . import haproxy
from .provision import FileSpec, ServiceSpec, manifest_path, manifest_text, sha256
from .spec import Container, Lab, has_root_disk
from .state import LabState, Resource, address, referenced_networks

UNKNOWN = "(known after apply)"


@dataclass(frozen=True)
class Provisioning:
    """Everything wanted inside one container."""

    packages: tuple[str, ...] = ()
    files: Mapping[str, FileSpec] = field(default_factory=dict)
    services: Mapping[str, ServiceSpec] = field(default_factory=dict)
    generated: Mapping[str, Callable[[Mapping[str, str]], str]] = field(default_factory=dict)


def desired_state(lab: Lab, base_dir: Path, addresses: Mapping[str, str]) -> LabState:
    """The whole desired state; `addresses` maps container -> IPv4 where live state knows it."""
    state: LabState = {}
    for name, net in lab.networks.items():
        _add(state, Resource("network", name, {"type": net.type, "description": net.description,
                                                "config": dict(sorted(net.config.items()))}))
    for name, prof in lab.profiles.items():
        _add(state, _profile(lab, name, prof))
    for name, container in lab.containers.items():
        _add(state, _instance(lab, name, container))
        if container.state == "running":
            for res in _provisioning(lab, name, provisioning_of(lab, name), base_dir, addresses):
                _add(state, res)
    return state


def _add(state: LabState, resource: Resource) -> None:
    state[resource.address] = resource


def _owned_deps(lab: Lab, profiles: list[str], devices: Mapping) -> tuple[str, ...]:
    deps = [address("profile", p) for p in profiles if p in lab.profiles]
    deps += [address("network", n) for n in sorted(referenced_networks(devices)) if n in lab.networks]
    return tuple(deps)


def _profile(lab: Lab, name: str, prof) -> Resource:
    devices = {d: dict(sorted(v.items())) for d, v in sorted(prof.devices.items())}
    body = {"description": prof.description, "config": dict(sorted(prof.config.items())), "devices": devices}
    return Resource("profile", name, body, _owned_deps(lab, [], devices))


def _instance(lab: Lab, name: str, c: Container) -> Resource:
    devices = {d: dict(sorted(v.items())) for d, v in sorted(c.devices.items())}
    body = {"type": c.type, "image": c.image, "description": c.description, "profiles": list(c.profiles),
            "config": dict(sorted(c.config.items())), "devices": devices, "state": c.state}
    # Every network first, not only those named: a macvlan NIC on a bridge's external port (the
    # simulated LAN) needs that bridge's DHCP server up before the container boots.
    networks = tuple(address("network", n) for n in sorted(lab.networks))
    return Resource("instance", name, body, tuple(dict.fromkeys(_owned_deps(lab, c.profiles, devices) + networks)))


# --- Provisioning -------------------------------------------------------------------------

def provisioning_of(lab: Lab, name: str) -> Provisioning:
    """What the container's own section and any HAProxy section ask for inside it."""
    c = lab.containers[name]
    packages, files, services = list(c.packages), dict(c.files), dict(c.services)
    generated = {}
    if name in lab.haproxy:
        extra = haproxy_provisioning(lab, name)
        packages += [p for p in extra.packages if p not in packages]
        files = {**extra.files, **files}
        services = {**extra.services, **services}
        generated = dict(extra.generated)
    if files:  # what apply wrote is recorded, so that a file dropped from lab.yaml is deleted
        files[manifest_path(lab.lab)] = FileSpec(content=manifest_text(lab.lab, list(files)))
    return Provisioning(tuple(packages), files, services, generated)


def _provisioning(lab: Lab, cname: str, want: Provisioning, base_dir: Path,
                  addresses: Mapping[str, str]) -> list[Resource]:
    """Packages, then files, then services: each waits for what comes before it in the container."""
    instance = address("instance", cname)
    packages = _packages(cname, want, instance)
    pkg_addrs = tuple(r.address for r in packages)
    files = _files(lab, cname, want, base_dir, addresses, (instance,) + pkg_addrs)
    services = _services(cname, want, (instance,) + pkg_addrs + tuple(r.address for r in files))
    return packages + files + services


def _packages(cname: str, want: Provisioning, instance: str) -> list[Resource]:
    # One package manager per container takes one lock: installs go one after another.
    return [Resource("package", f"{cname}:{p}", {"installed": True},
                     (instance,) + tuple(address("package", f"{cname}:{q}") for q in want.packages[:i]))
            for i, p in enumerate(want.packages)]


def _files(lab: Lab, cname: str, want: Provisioning, base_dir: Path, addresses: Mapping[str, str],
           deps: tuple[str, ...]) -> list[Resource]:
    manifest = manifest_path(lab.lab)
    plain = tuple(address("file", f"{cname}:{p}") for p, spec in sorted(want.files.items())
                  if not spec.check and p != manifest)
    everything = tuple(address("file", f"{cname}:{p}") for p in sorted(want.files) if p != manifest)
    out = []
    for path, spec in sorted(want.files.items()):
        extra = _parents(cname, path, want)
        if spec.check:
            extra += plain  # checked against the others (haproxy.cfg names the error pages)
        if path == manifest:
            extra += everything  # recorded once the rest is written
        out.append(_file(lab, cname, path, spec, _renderer(lab, cname, path, want, base_dir), addresses,
                         deps + extra))
    return out


def _services(cname: str, want: Provisioning, deps: tuple[str, ...]) -> list[Resource]:
    # Services to stop go first: one may hold what another needs (a port, a lock).
    stopped = tuple(address("service", f"{cname}:{s}") for s, spec in sorted(want.services.items())
                    if not spec.running)
    return [Resource("service", f"{cname}:{s}", service_body(spec), deps + (stopped if spec.running else ()),
                     meta={"watches": list(spec.watches), "on_change": spec.on_change})
            for s, spec in sorted(want.services.items())]


def service_body(spec: ServiceSpec) -> dict:
    body = {"enabled": spec.enabled, "running": spec.running}
    if spec.running and spec.listens:
        body["listening"] = list(spec.listens)
    return body


def _parents(cname: str, path: str, want: Provisioning) -> tuple[str, ...]:
    parents = []
    parent = path.rstrip("/").rsplit("/", 1)[0]
    while parent:
        if parent in want.files:
            parents.append(address("file", f"{cname}:{parent}"))
        parent = parent.rsplit("/", 1)[0]
    return tuple(parents)


def _renderer(lab: Lab, cname: str, path: str, want: Provisioning, base_dir: Path):
    if want.files[path].type != "file":
        return None
    if path in want.generated:
        make = want.generated[path]
        return lambda addresses: make(addresses).encode()
    return content_renderer(lab, cname, want.files[path], base_dir)


def _file(lab: Lab, cname: str, path: str, spec: FileSpec, render, addresses: Mapping[str, str],
          deps: tuple[str, ...]) -> Resource:
    body = {"type": spec.type, "mode": spec.wanted_mode, "owner": spec.owner, "group": spec.group}
    if render is not None:
        try:
            data = render(addresses)
            body.update(sha256=sha256(data), content=shown_content(data, spec.secret))
        except MissingAddress:
            body.update(sha256=UNKNOWN, content=UNKNOWN)
    return Resource("file", f"{cname}:{path}", body, deps, deferred=render,
                    meta={"check": spec.check, "secret": spec.secret})


def shown_content(data: bytes, secret: bool) -> str | None:
    """What plans may show of a file: its text, or None (binary, large or secret)."""
    if secret or len(data) > 256 * 1024:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class MissingAddress(LookupError):
    """A template needs the address of containers whose address is not known yet."""

    def __init__(self, containers: list[str]):
        super().__init__(f"no address yet for {', '.join(containers)}")
        self.containers = containers


_FACT = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


def content_renderer(lab: Lab, cname: str, spec: FileSpec, base_dir: Path):
    """A function addresses -> file bytes for a content, source or template file."""
    if spec.content is not None:
        return lambda addresses: spec.content.encode()
    if spec.source is not None:
        data = (base_dir / spec.source).read_bytes()
        return lambda addresses: data
    return lambda addresses: fill_template(spec.template, lab, cname, addresses).encode()


def haproxy_provisioning(lab: Lab, cname: str) -> Provisioning:
    """HAProxy as packages, files and services: checked with `haproxy -c`, reloaded on change."""
    spec = lab.haproxy[cname]
    dirs = {d: FileSpec(type="directory") for d in haproxy.support_dirs(spec)}
    run_dir = spec.global_.stats_socket.rsplit("/", 1)[0]  # as its tmpfiles.d rule recreates it at boot
    dirs[run_dir] = FileSpec(type="directory", owner=spec.global_.user, group=spec.global_.group)
    support = {path: FileSpec(content=text) for path, text in haproxy.support_files(spec).items()}
    config = FileSpec(content="", check=["haproxy", "-c", "-f", "{}"])
    watched = [haproxy.CONFIG_PATH] + sorted(haproxy.error_page_files(spec))
    ports = haproxy.listen_ports(spec)
    services = {"haproxy": ServiceSpec(watches=watched, on_change="reload", listens=ports)}
    packages = ["haproxy"]
    if haproxy.rsyslog_files(spec):
        packages.append("rsyslog")
        services["rsyslog"] = ServiceSpec(watches=sorted(haproxy.rsyslog_files(spec)), on_change="restart")
        services["haproxy"] = ServiceSpec(watches=watched + sorted(haproxy.rsyslog_files(spec)), on_change="reload",
                                          listens=ports)
    return Provisioning(tuple(packages), {**dirs, **support, haproxy.CONFIG_PATH: config}, services,
                        {haproxy.CONFIG_PATH: lambda addresses: _haproxy_config(lab, cname, addresses)})


def _haproxy_config(lab: Lab, cname: str, addresses: Mapping[str, str]) -> str:
    needed = haproxy.server_containers(lab.haproxy[cname])
    missing = sorted(needed - set(addresses))
    if missing:
        raise MissingAddress(missing)
    return haproxy.render_config(lab.haproxy[cname], dict(addresses))


def fill_template(text: str, lab: Lab, cname: str, addresses: Mapping[str, str]) -> str:
    """Fill {{ lab.name }}, {{ container.name }}, {{ vars.X }}, {{ container.address }},
    {{ containers.X.address }}."""
    def one(match: re.Match) -> str:
        key = match.group(1)
        if key == "lab.name":
            return lab.lab
        if key == "container.name":
            return cname
        if key.startswith("vars."):
            return lab.containers[cname].vars.get(key[5:], "")
        target = cname if key == "container.address" else key.removeprefix("containers.").removesuffix(".address")
        if target not in addresses:
            raise MissingAddress([target])
        return addresses[target]
    return _FACT.sub(one, text)


def root_disk_problems(lab: Lab, existing_profiles: Mapping[str, Mapping]) -> list[str]:
    """Containers with no root disk once existing profiles' live devices are known."""
    out = []
    for cname, c in lab.containers.items():
        devices: dict = {}
        for p in c.profiles:
            devices.update(lab.profiles[p].devices if p in lab.profiles else existing_profiles.get(p, {}))
        devices.update(c.devices)
        if not has_root_disk(devices):
            out.append(f"containers.{cname}: no root disk in its profiles {c.profiles} or its devices")
    return out
