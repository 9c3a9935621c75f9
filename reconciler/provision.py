"""Inside a container: the models of files and services in lab.yaml.  Pure.

How they are read is facts.py's; how they are changed, their kinds' (reconciler/kinds/).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class FileSpec(BaseModel):
    """A file or directory inside a container."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["file", "directory"] = "file"
    content: str | None = Field(None, description="the file's text")
    source: str | None = Field(None, description="a file to copy, relative to lab.yaml")
    template: str | None = Field(None, description="text with {{ lab.name }}, {{ container.name }},"
                                 " {{ containers.NAME.address }} filled in at apply")
    mode: str | None = Field(None, description="octal, e.g. '0644' (default 0644, directories 0755)")
    owner: str = "root"
    group: str = "root"
    secret: bool = Field(False, description="never show the content in plans or logs")
    check: list[str] | None = Field(None, description="argv run on the new file before it goes live;"
                                    " {} is its path; a non-zero exit refuses the change")

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^0?[0-7]{3,4}$", str(value)):
            raise ValueError("mode must be octal, like '0644'")
        return None if value is None else f"{int(str(value), 8):04o}"

    @field_validator("owner", "group")
    @classmethod
    def _account(cls, value: str) -> str:
        if not re.match(r"^([a-z_][a-z0-9_-]*\$?|\d+)$", value):
            raise ValueError(f"{value!r} is not a user or group name")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "FileSpec":
        given = [k for k in ("content", "source", "template") if getattr(self, k) is not None]
        if self.type == "directory" and given:
            raise ValueError("a directory has no content, source or template")
        if self.type == "file" and len(given) != 1:
            raise ValueError("give exactly one of content, source or template")
        return self

    @property
    def wanted_mode(self) -> str:
        return self.mode or ("0755" if self.type == "directory" else "0644")


class ServiceSpec(BaseModel):
    """A service (systemd unit) inside a container."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    running: bool = True
    watches: list[str] = Field([], description="paths of managed files; a change to one reloads or restarts")
    on_change: Literal["reload", "restart"] = "restart"
    listens: list[int] = Field([], description="TCP ports the service itself must hold while running:"
                               " plan shows a port it does not hold, apply waits for them")
    after: list[str] = Field([], description="services of this container set up first (e.g. a log daemon"
                             " whose socket this one needs)")

    @field_validator("listens")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        if any(not 0 < p < 65536 for p in value):
            raise ValueError("ports are 1 to 65535")
        return sorted(set(value))


def validate_path(path: str) -> str | None:
    """The problem with a file path, or None."""
    if not path.startswith("/") or "/../" in path + "/" or "\x00" in path or "\n" in path:
        return "must be an absolute path without '..'"
    return None
