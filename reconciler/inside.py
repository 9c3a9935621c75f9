"""What lab.yaml puts inside a container, shared by plan and apply: the packages, files and services
wanted there (`Provisioning`), a file's bytes made from the lab (`render_file`, which apply calls
again for a file that waited for live addresses), how the record inside a container names a thing,
and how a container's facts are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import haproxy
from .address import Address
from .errors import LxdError
from .facts import Facts, FactsError, facts_argv, parse_facts
from .haproxy import runtime
from .provision import FileSpec, ServiceSpec
from .spec import Lab, proxied_frontends, read_source

if TYPE_CHECKING:
    from .lxd import Lxd


@dataclass(frozen=True)
class Provisioning:
    """Everything wanted inside one container."""

    packages: tuple[str, ...] = ()
    files: Mapping[str, FileSpec] = field(default_factory=dict)
    services: Mapping[str, ServiceSpec] = field(default_factory=dict)
    generated: frozenset[str] = frozenset()  # paths rendered from the haproxy section
    admin_socket: str = ""  # HAProxy's: its runtime state is read with the facts

    @property
    def empty(self) -> bool:
        return not (self.packages or self.files or self.services)

    def secret_paths(self) -> dict[str, bool]:
        return {p: s.secret for p, s in self.files.items()}


def provisioning_of(lab: Lab, name: str) -> Provisioning:
    """What the container's own section and any HAProxy section ask for inside it."""
    c = lab.containers[name]
    if name not in lab.haproxy:
        return Provisioning(tuple(c.packages), dict(c.files), dict(c.services))
    extra = haproxy_provisioning(lab, name)
    packages = list(c.packages) + [p for p in extra.packages if p not in c.packages]
    return Provisioning(tuple(packages), {**extra.files, **c.files}, {**extra.services, **c.services},
                        extra.generated, extra.admin_socket)


def waits_for(lab: Lab, cname: str, path: str, want: Provisioning) -> set[str]:
    """Containers whose live address the file's content needs (a template's, from its syntax tree)."""
    if path in want.generated:
        return haproxy.server_containers(lab.haproxy[cname])
    text = want.files[path].template
    if text is None:
        return set()
    from . import templates
    needs = templates.needs(text)
    out = set(needs.containers) | ({cname} if needs.own else set())
    if needs.every_container:
        out |= {n for n, c in lab.containers.items() if c.state == "running"}
    if needs.servers:
        out |= {s for spec in lab.haproxy.values() for s in haproxy.server_containers(spec)
                if s in lab.containers and lab.containers[s].state == "running"}
    return out & set(lab.containers)


class MissingAddress(LookupError):
    """A template needs the address of containers whose address is not known yet."""

    def __init__(self, containers: list[str]):
        super().__init__(f"no address yet for {', '.join(containers)}")
        self.containers = containers


def render_file(lab: Lab, base_dir: Path, cname: str, path: str, addresses: Mapping[str, str]) -> bytes:
    """A file's bytes from the lab: content, source, template or generated; MissingAddress if the
    addresses it needs are not all known, TemplateProblem (a ValueError) if its template fails."""
    want = provisioning_of(lab, cname)
    missing = sorted(waits_for(lab, cname, path, want) - set(addresses))
    if missing:
        raise MissingAddress(missing)
    if path in want.generated:
        return haproxy.render_config(lab.haproxy[cname], dict(addresses), proxied=proxied_frontends(lab, cname)).encode()
    spec = want.files[path]
    if spec.content is not None:
        return spec.content.encode()
    if spec.source is not None:
        return read_source(base_dir.resolve(), spec.source)  # checked again: it may have moved since validate
    from . import templates
    return templates.render(spec.template or "", templates.context(lab, cname, addresses)).encode()


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
    packages = ["haproxy"]
    services = {}
    logs = sorted(haproxy.rsyslog_files(spec))
    if logs:
        # HAProxy's unit bind-mounts rsyslog's socket in its chroot: rsyslog must have made it first.
        packages.append("rsyslog")
        services["rsyslog"] = ServiceSpec(watches=logs, on_change="restart")
    services[runtime.SERVICE] = ServiceSpec(watches=watched + logs, on_change="reload", listens=ports,
                                            after=["rsyslog"] if logs else [])
    return Provisioning(tuple(packages), {**dirs, **support, haproxy.CONFIG_PATH: config}, services,
                        frozenset({haproxy.CONFIG_PATH}), spec.global_.stats_socket)


def record_key(addr: Address) -> str:
    """How the record inside a container names one of its things: `file:/etc/motd`."""
    return f"{addr.kind.value}:{addr.key}"


def container_facts(lxd: Lxd, name: str, want: Provisioning, record: str | None = None,
                    **only: Any) -> Facts:
    """The facts of one container: what `want` manages (or only the `files`, `packages`, ... given)."""
    if only:
        argv = facts_argv(record=record, **only)
    else:
        secret = want.secret_paths()
        argv = facts_argv([p for p, s in secret.items() if not s], [p for p, s in secret.items() if s],
                          want.packages, want.services, record,
                          {n: s.listens for n, s in want.services.items() if s.listens}, runtime_question(want))
    code, out, err = lxd.execute(name, argv)
    if code != 0:
        raise LxdError(f"instance {name}: reading its files, packages and services failed: {err.strip()}")
    try:
        return parse_facts(out)
    except FactsError as bad:
        raise LxdError(f"instance {name}: its facts could not be read: {bad}") from None


def runtime_question(want: Provisioning) -> tuple[str, str, str] | None:
    """The perl client, the admin socket and `show servers state`, as the drain's client sends them."""
    if not want.admin_socket:
        return None
    _, _, client, socket, command = runtime.client_argv(want.admin_socket, runtime.SHOW_SERVERS_STATE)
    return client, socket, command
