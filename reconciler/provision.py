"""Inside a container: the models of files and services in lab.yaml.  Pure.

How they are read is facts.py's; how they are changed, their kinds' (reconciler/kinds/).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)

from .source import as_written
from .values import UNSAFE_CHARS, Matching, anchored, unsafe_char

MAX_PATH, MAX_COMPONENT = 4096, 255  # Linux's PATH_MAX and NAME_MAX, in bytes

# An absolute, canonical path: no empty, '.' or '..' component, no trailing '/', no control or
# invisible character. validate_path says which rule a path breaks; the schema uses this.
PATH = rf"/|(?=.{{1,{MAX_PATH}}}$)(?:/(?!\.\.?(?:/|$))[^/{UNSAFE_CHARS}]{{1,{MAX_COMPONENT}}})+"
# `source:` is relative to the lab file's folder and never climbs out of it by '..'.
SOURCE = rf"(?!/)(?!(?:.*/)?\.\.(?:/|$))[^{UNSAFE_CHARS}]{{1,{MAX_PATH}}}"
# systemd's unit names (unit_name_is_valid): no option-like '-' first, a template only with an instance.
UNIT_TYPES = ("service", "socket", "timer", "target", "path", "mount")
OTHER_UNIT_TYPES = ("device", "swap", "automount", "slice", "scope")
_UNIT_CHAR = r"[A-Za-z0-9:_.\\-]"
SERVICE_NAME = (rf"(?=.{{1,255}}$)(?!.*\.(?:{'|'.join(OTHER_UNIT_TYPES)})$)"
                rf"[A-Za-z0-9_\\]{_UNIT_CHAR}*(?:@[A-Za-z0-9:_\\-]{_UNIT_CHAR}*)?")
MODE = r"0?[0-7]{3,4}"
ACCOUNT = r"[a-z_][a-z0-9_-]{0,31}\$?|[0-9]{1,10}"
Account = Annotated[str, Matching(ACCOUNT, "a user or group name (or number)")]
Port = Annotated[int, Field(ge=1, le=65535)]


def _argv_word(value: str) -> str:
    if value == "" or "\x00" in value:
        raise ValueError("an argument of check must be non-empty and hold no NUL")
    return value


ONE_SOURCE: list[Any] = [{"required": [k]} for k in ("content", "source", "template")]


class FileSpec(BaseModel):
    """A file or directory inside a container."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True, json_schema_extra={
        # a directory has none of content, source, template; a file exactly one
        "if": {"properties": {"type": {"const": "directory"}}, "required": ["type"]},
        "then": {"not": {"anyOf": ONE_SOURCE}}, "else": {"oneOf": ONE_SOURCE}})

    type: Literal["file", "directory"] = "file"
    content: str | None = Field(None, description="the file's text")
    source: Annotated[str | None, Field(json_schema_extra={"pattern": anchored(SOURCE)})] = Field(
        None, description="a file to copy, relative to lab.yaml's folder (which it must stay inside)")
    template: str | None = Field(None, description="a Jinja2 template (sandboxed): {{ vars.NAME }}, {{ lab.name }},"
                                 " {{ container.name }}, {{ containers.NAME.address }}, loops over containers, ...")
    mode: Annotated[str | None, Field(json_schema_extra={"pattern": anchored(MODE)})] = Field(
        None, description="octal, e.g. '0644' (default 0644, directories 0755)")
    owner: Account = "root"
    group: Account = "root"
    secret: bool = Field(False, description="never show the content in plans or logs")
    check: list[Annotated[str, BeforeValidator(_argv_word)]] | None = Field(
        None, description="argv run on the new file before it goes live; {} is its path;"
        " a non-zero exit refuses the change", json_schema_extra={"items": {"type": "string", "minLength": 1,
                                                                             "pattern": "^[^\\x00]*$"}})

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # YAML reads 0644 as the number 644: the mode must be written as a string
            text = as_written(value) or value
            raise ValueError(f'mode must be a string: quote it: mode: "{text}"')  # noqa: TRY004 - pydantic needs ValueError
        if not isinstance(value, str):
            return value  # None, or a type the str field refuses itself
        if not re.fullmatch(MODE, value):
            raise ValueError("mode must be octal, like '0644'")
        return f"{int(value, 8):04o}"

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(SOURCE, value):
            raise ValueError(f"{value!r} must be a path relative to the lab file's folder, without '..'"
                             " or control characters")
        return value

    @property
    def wanted_mode(self) -> str:
        return self.mode or ("0755" if self.type == "directory" else "0644")


class ServiceSpec(BaseModel):
    """A service (systemd unit) inside a container."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    enabled: bool = True
    running: bool = True
    watches: list[Annotated[str, Field(json_schema_extra={"pattern": anchored(PATH)})]] = Field(
        [], description="paths of this container's files; a change to one reloads or restarts")
    on_change: Literal["reload", "restart"] = "restart"
    listens: list[Port] = Field([], description="TCP ports the service itself must hold while running:"
                                " plan shows a port it does not hold, apply waits for them")
    after: list[str] = Field([], description="services of this container set up first (e.g. a log daemon"
                             " whose socket this one needs)")

    @field_validator("listens")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        return sorted(set(value))


def contents_problem(spec: FileSpec) -> str | None:
    """Why a file's contents are not given as they must be, or None: a file has exactly one of content,
    source or template, a directory none.  A check of its own rather than the model's, so that a
    file with two of them still has its `source:` and template checked."""
    given = [k for k in ("content", "source", "template") if getattr(spec, k) is not None]
    if spec.type == "directory" and given:
        return "a directory has no content, source or template"
    if spec.type == "file" and len(given) != 1:
        return "give exactly one of content, source or template"
    return None


def validate_path(path: str) -> str | None:
    """The problem with a file path inside a container, or None."""
    char = unsafe_char(path)
    if char:
        return f"contains the control or invisible character {char}"
    if not path.startswith("/"):
        return "must be an absolute path (starting with /)"
    if len(path.encode()) > MAX_PATH:
        return f"is longer than {MAX_PATH} bytes"
    if path == "/":
        return None
    if path.endswith("/"):
        return "must not end with '/'"
    parts = path[1:].split("/")
    if "" in parts:
        return "must not contain '//'"
    if any(part in (".", "..") for part in parts):
        return "must not contain '.' or '..' components"
    if any(len(part.encode()) > MAX_COMPONENT for part in parts):
        return f"has a component longer than {MAX_COMPONENT} bytes"
    return None


def validate_service_name(name: str) -> str | None:
    """The problem with a systemd unit name, or None (it reaches systemctl as an argument)."""
    char = unsafe_char(name)
    if char:
        return f"contains the control or invisible character {char}"
    if re.fullmatch(SERVICE_NAME, name):
        return None
    _, dot, suffix = name.rpartition(".")
    if dot and suffix in OTHER_UNIT_TYPES:
        return f"is a .{suffix} unit; services are {', '.join('.' + t for t in UNIT_TYPES)} units"
    if re.fullmatch(r"[^@]+@(\..*)?", name):
        return "is a template: name an instance, like getty@tty1"
    if len(name) > 255:
        return "is longer than 255 characters"
    return (r"is not a systemd unit name: letters, digits and : _ . \ - @ (one @, before an instance),"
            " not starting with '-' or '.'")
