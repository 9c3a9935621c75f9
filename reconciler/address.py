"""Addresses: what a resource is called, as a value.  Parsed once; printed only at the edges.

`project.lab1`, `acl.web-only`, `network.lan0`, `profile.macvlan`, `instance.web1`,
`forward.lan/10.203.117.250` (a nested kind's: PARENT/NAME) name LXD objects; `package.web1:apache2`,
`file.proxyha:/etc/haproxy/haproxy.cfg`, `service.proxyha:haproxy` name things inside a container, and
`server.proxyha:subdomain1/site1` an HAProxy server's runtime state (its weight, its admin state).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar


class _Words(type):
    """Iterating over `Kind` gives every registered kind, in plan order; `len(Kind)` counts them."""

    def __iter__(cls) -> Iterator[Kind]:
        return iter(Kind.all())

    def __len__(cls) -> int:
        return len(Kind.all())


class Kind(str, metaclass=_Words):
    """A kind of resource, by its address word: an open set, one instance per word.  Each has a module in
    kinds/ (which sets its plan order); a kind module says `KIND = Kind.register("volume")`, and the words
    below are the kinds the core itself names.  `Kind("volume")` is the registered one, ValueError if none."""

    _words: ClassVar[dict[str, Kind]] = {}
    PROJECT: ClassVar[Kind]  # the LXD project a lab owns: everything else lives in it
    ACL: ClassVar[Kind]  # an LXD network ACL: networks name it
    NETWORK: ClassVar[Kind]
    PROFILE: ClassVar[Kind]
    INSTANCE: ClassVar[Kind]
    PACKAGE: ClassVar[Kind]
    FILE: ClassVar[Kind]
    SERVICE: ClassVar[Kind]
    SERVER: ClassVar[Kind]  # an HAProxy server's runtime state: `server.proxyha:subdomain1/site1`

    def __new__(cls, word: str) -> Kind:
        _loaded()
        found = cls._words.get(str(word))
        if found is None:
            raise ValueError(f"{word!r} is not a Kind")
        return found

    @classmethod
    def register(cls, word: str) -> Kind:
        """The one Kind of `word`, made on first call (a kind module's `KIND`)."""
        if word not in cls._words:
            cls._words[word] = str.__new__(cls, word)
        return cls._words[word]

    @classmethod
    def all(cls) -> tuple[Kind, ...]:
        """Every registered kind, in plan order (each kind module's RANK)."""
        _loaded()
        return tuple(sorted(cls._words.values(), key=lambda k: k.rank))

    @classmethod
    def registered(cls) -> tuple[Kind, ...]:
        """The words registered so far, in the order they were (the registry's check: each has a module)."""
        return tuple(cls._words.values())

    @classmethod
    def parse(cls, word: str) -> Kind:
        return cls(word)

    @property
    def value(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Kind({self.value!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Kind, (self.value,))

    @property
    def inside(self) -> bool:
        """Lives inside a container (read by its facts exec) rather than in LXD's API."""
        return self in _inside_kinds()

    @property
    def rank(self) -> int:
        """Plan order, as the kind's module declares it."""
        from .kinds import REGISTRY  # kinds name their Kind: imported here, not at module level
        return REGISTRY[self].RANK


for _word in ("project", "acl", "network", "profile", "instance", "package", "file", "service", "server"):
    setattr(Kind, _word.upper(), Kind.register(_word))


def _loaded() -> None:
    """Every kind module has registered its word (the registry imports them all)."""
    from . import kinds  # noqa: F401  (kinds name their Kind: imported here, not at module level)


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
            kind = Kind.parse(kind_text)
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


def package(container: str, name: str) -> Address:
    return Address(Kind.PACKAGE, container, name)


def file(container: str, path: str) -> Address:
    return Address(Kind.FILE, container, path)


def service(container: str, name: str) -> Address:
    return Address(Kind.SERVICE, container, name)


def server(container: str, backend: str, name: str) -> Address:
    return Address(Kind.SERVER, container, f"{backend}/{name}")
