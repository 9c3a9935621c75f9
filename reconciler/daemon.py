"""Which daemon a connection talks to: LXD or Incus (its fork), and its version, as its GET /1.0 says.

Pure data (no pylxd): plans record it, and the CLI prints it."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .spec import Lab

DaemonName = Literal["lxd", "incus"]
TITLES = {"lxd": "LXD", "incus": "Incus"}


@dataclass(frozen=True)
class Daemon:
    name: str  # environment.server: "lxd" or "incus" (another fork would say its own name)
    version: str  # environment.server_version
    extensions: frozenset[str] = field(default=frozenset(), compare=False)  # api_extensions (not in plans)

    @classmethod
    def from_host_info(cls, info: dict[str, Any]) -> Daemon:
        """From GET /1.0's metadata. LXD 5.0 already says `server: lxd`; older ones said nothing."""
        env = info.get("environment") or {}
        return cls(str(env.get("server") or "lxd"), str(env.get("server_version") or "unknown"),
                   frozenset(str(e) for e in info.get("api_extensions") or ()))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Daemon:
        return cls(str(data["name"]), str(data["version"]))

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)

    def __str__(self) -> str:
        return f"{self.title} {self.version}"


# What parts of a lab need of the daemon's API, by the extension's name in GET /1.0's api_extensions
# (never by version: a fork or a backport has its own numbers). LXD 5.0 and Incus 6.0 have them all.
# Each kind of LXD object declares its own (API_EXTENSION); what runs inside containers needs exec.
Need = tuple[str, str, Callable[["Lab"], bool]]


def needs() -> tuple[Need, ...]:
    from .kinds import OBJECT_KINDS  # the kinds import plan, which imports this module
    from .kinds.contract import ObjectKind, Wanted

    def used(kind: ObjectKind) -> Callable[[Lab], bool]:
        return lambda lab: bool(kind.desired(lab, Wanted()))

    return tuple((f"{k.NOUN}s ({k.TABLE or k.KIND.value}:)", k.API_EXTENSION, used(k)) for k in OBJECT_KINDS
                 if k.API_EXTENSION) + (
        ("files, packages or services inside containers", "container_exec_recording",
         lambda lab: bool(lab.haproxy) or any(c.files or c.packages or c.services for c in lab.containers.values())),)



def missing_extensions(lab: Lab, extensions: Collection[str]) -> list[str]:
    """Each part of the lab the daemon cannot serve, with the API extension it lacks."""
    return [f"{part} need the API extension {extension}" for part, extension, used in needs()
            if extension not in extensions and used(lab)]
