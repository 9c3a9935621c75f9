"""Addresses: what a resource is called, as a value.  Parsed once; printed only at the edges.

`project.lab1`, `acl.web-only`, `network.lan0`, `profile.macvlan`, `instance.web1`,
`forward.lan/10.203.117.250` name LXD objects; `package.web1:apache2`,
`file.proxyha:/etc/haproxy/haproxy.cfg`, `service.proxyha:haproxy` name things inside a container, and
`server.proxyha:subdomain1/site1` an HAProxy server's runtime state (its weight, its admin state).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache


class Kind(StrEnum):
    """Every kind of resource, by its address word; each has a module in kinds/ (which sets its plan order)."""

    PROJECT = "project"  # the LXD project a lab owns: everything else lives in it
    ACL = "acl"  # an LXD network ACL: networks name it
    NETWORK = "network"
    POOL = "pool"  # an LXD storage pool (server-wide)
    VOLUME = "volume"  # a custom storage volume on a pool: named POOL/NAME
    PROFILE = "profile"
    INSTANCE = "instance"
    FORWARD = "forward"  # an LXD network forward: after its network and the container it leads to
    PACKAGE = "package"
    FILE = "file"
    SERVICE = "service"
    SERVER = "server"  # an HAProxy server's runtime state: `server.proxyha:subdomain1/site1`

    @property
    def inside(self) -> bool:
        """Lives inside a container (read by its facts exec) rather than in LXD's API."""
        return self in _inside_kinds()

    @property
    def rank(self) -> int:
        """Plan order, as the kind's module declares it."""
        from .kinds import REGISTRY  # kinds name their Kind: imported here, not at module level
        return REGISTRY[self].RANK


@cache
def _inside_kinds() -> frozenset[Kind]:
    from .kinds import INSIDE_KINDS  # kinds name their Kind: imported here, not at module level
    return frozenset(m.KIND for m in INSIDE_KINDS)


@dataclass(frozen=True)
class Address:
    kind: Kind
    name: str  # the LXD object's name; for things inside a container, the container's
    key: str = ""  # inside a container: the package, the file's path or the service

    def __post_init__(self) -> None:
        if self.kind.inside != bool(self.key):
            raise ValueError(f"{self.kind.value} addresses {'need' if self.kind.inside else 'take no'} key")

    def __str__(self) -> str:
        return f"{self.kind.value}.{self.name}" + (f":{self.key}" if self.key else "")

    @classmethod
    def parse(cls, text: str) -> Address:
        """`file.web1:/etc/motd` -> Address(FILE, 'web1', '/etc/motd'); ValueError if malformed."""
        kind_text, dot, rest = text.partition(".")
        try:
            kind = Kind(kind_text)
        except ValueError:
            raise ValueError(f"{text!r}: unknown kind {kind_text!r} (one of"
                             f" {', '.join(k.value for k in Kind)})") from None
        if not dot or not rest:
            raise ValueError(f"{text!r}: expected KIND.NAME")
        name, _, key = rest.partition(":") if kind.inside else (rest, "", "")
        return cls(kind, name, key)

    @property
    def container(self) -> str | None:
        """The container this is, or is inside of."""
        return self.name if self.kind == Kind.INSTANCE or self.kind.inside else None

    @property
    def instance(self) -> Address:
        """The instance a thing inside a container belongs to (itself for an instance)."""
        return Address(Kind.INSTANCE, self.name)

    def sort_key(self) -> tuple[int, str, str]:
        return (self.kind.rank, self.name, self.key)

    def __lt__(self, other: Address) -> bool:
        return self.sort_key() < other.sort_key()


def project(name: str) -> Address:
    return Address(Kind.PROJECT, name)


def acl(name: str) -> Address:
    return Address(Kind.ACL, name)


def network(name: str) -> Address:
    return Address(Kind.NETWORK, name)


def profile(name: str) -> Address:
    return Address(Kind.PROFILE, name)


def instance(name: str) -> Address:
    return Address(Kind.INSTANCE, name)


def forward(network_name: str, listen_address: str) -> Address:
    """A network's forward: `forward.lan/10.203.117.250` (nested: PARENT/NAME)."""
    return Address(Kind.FORWARD, f"{network_name}/{listen_address}")


def package(container: str, name: str) -> Address:
    return Address(Kind.PACKAGE, container, name)


def file(container: str, path: str) -> Address:
    return Address(Kind.FILE, container, path)


def service(container: str, name: str) -> Address:
    return Address(Kind.SERVICE, container, name)


def server(container: str, backend: str, name: str) -> Address:
    return Address(Kind.SERVER, container, f"{backend}/{name}")
