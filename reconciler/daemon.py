"""Which daemon a connection talks to: LXD or Incus (its fork), and its version, as its GET /1.0 says.

Pure data (no pylxd): plans record it, and the CLI prints it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DaemonName = Literal["lxd", "incus"]
TITLES = {"lxd": "LXD", "incus": "Incus"}


@dataclass(frozen=True)
class Daemon:
    name: str  # environment.server: "lxd" or "incus" (another fork would say its own name)
    version: str  # environment.server_version

    @classmethod
    def from_host_info(cls, info: dict[str, Any]) -> Daemon:
        """From GET /1.0's metadata. LXD 5.0 already says `server: lxd`; older ones said nothing."""
        env = info.get("environment") or {}
        return cls(str(env.get("server") or "lxd"), str(env.get("server_version") or "unknown"))

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
