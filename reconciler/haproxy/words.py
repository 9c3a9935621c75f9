"""The constrained strings of the haproxy section: each one safe haproxy.cfg word, checked by the models
and stated in the schema alike (no value can split or add a haproxy.cfg line)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import core_schema

from .hints import CONTAINER_NAME, HintBudget, Serving, container_hint

# Codes HAProxy can answer with an errorfile (configuration manual, "errorfile").
ERROR_CODES = (200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 500, 501, 502, 503, 504)


def _unsafe(value: str) -> str | None:
    """Why `value` cannot be one word of haproxy.cfg, or None."""
    if "\n" in value or "\r" in value:
        return "contains a line break (it would inject a new haproxy.cfg line)"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains a control character"
    if any(c.isspace() for c in value):
        return "contains whitespace (haproxy would split it into two words)"
    if any(c in value for c in "#\\'\"$"):
        return "contains one of # \\ ' \" $ (haproxy would read a comment, escape or quote)"
    return None


@dataclass(frozen=True)
class Word:
    """`Annotated[str, Word(WHAT, PATTERN, HINT)]`: one safe haproxy.cfg word matching PATTERN, in the
    checks and in the schema alike."""

    what: str
    pattern: str
    hint: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        rx = re.compile(self.pattern)

        def check(value: str) -> str:
            why = _unsafe(value) or (None if rx.fullmatch(value) else f"is not {self.hint}")
            if why:
                raise ValueError(f"{self.what} {value!r} {why}")
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return _schema(self.what, self.pattern, self.hint)


def _schema(what: str, pattern: str, hint: str) -> dict:
    # `$(?!\n)`: Python's re (jsonschema's) lets a bare `$` match before a final newline.
    return {"type": "string", "pattern": f"^(?:{pattern})$(?!\\n)", "description": f"{what}: {hint}"}


def lab_containers(info: ValidationInfo | None) -> set[str]:
    """The lab's container names, when the caller passed them as validation context."""
    context = info.context if info is not None else None
    return set(context.get("containers", ())) if isinstance(context, dict) else set()


def _serving(info: ValidationInfo | None) -> Serving | None:
    """Who serves a host name, when the caller passed it as validation context."""
    context = info.context if info is not None else None
    serving = context.get("serving") if isinstance(context, dict) else None
    return serving if callable(serving) else None


def _hint_budget(info: ValidationInfo | None) -> HintBudget | None:
    """The closest-name searches left, when the caller passed a budget as validation context."""
    context = info.context if info is not None else None
    budget = context.get("hints") if isinstance(context, dict) else None
    return budget if isinstance(budget, HintBudget) else None


def _container(value: str, info: ValidationInfo) -> str:
    why = _unsafe(value) or (None if re.fullmatch(CONTAINER_NAME, value) else "is not an LXD container name")
    if why:
        hint = container_hint(value, lab_containers(info), _serving(info), _hint_budget(info))
        raise ValueError(f"container {value!r} {why}{hint}")
    return value


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME = (r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", "a name of letters, digits, '_', '.', '-' (at most 63)")
Name = Annotated[str, Word("name", *_NAME)]
NAME_KEYS: dict[str, Any] = {"propertyNames": _schema("name", *_NAME)}  # the schema of a mapping keyed by Name
ContainerName = Annotated[str, AfterValidator(_container),
                          WithJsonSchema(_schema("container", CONTAINER_NAME, "an LXD container name"))]
Hostname = Annotated[str, Word("host", rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*", "a DNS host name")]
UrlPath = Annotated[str, Word("path", r"/[A-Za-z0-9._~%!&()*+,;=:@/-]*", "a URL path starting with '/'")]
AbsPath = Annotated[str, Word("path", r"/[A-Za-z0-9._@+/-]*", "an absolute file path")]
HeaderName = Annotated[str, Word("header", r"[A-Za-z0-9_-]{1,64}", "an HTTP header name")]
Account = Annotated[str, Word("account", r"[a-z_][a-z0-9_-]{0,31}", "a system user or group name")]
Duration = (Annotated[int, Field(gt=0, description="milliseconds")]
            | Annotated[str, Word("duration", r"[0-9]+(?:us|ms|s|m|h|d)", "a HAProxy time such as 500ms, 2s, 1m")])
Port = Annotated[int, Field(ge=1, le=65535)]
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(duration: int | str) -> float:
    """A Duration (milliseconds, or a HAProxy time such as 2s) in seconds."""
    if isinstance(duration, int):
        return duration / 1000
    number, unit = re.fullmatch(r"([0-9]+)([a-z]+)", duration).groups()  # type: ignore[union-attr]
    return int(number) * _UNIT_SECONDS[unit]


def parse_bind(bind: str) -> tuple[str, int]:
    """("*" or the IPv4 address, port) of a bind string; ValueError if not valid."""
    addr, _, port = bind.rpartition(":")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"bind {bind!r}: port must be 1-65535")
    if addr in ("", "*"):
        return "*", int(port)
    try:
        return str(ipaddress.IPv4Address(addr)), int(port)
    except ValueError:
        raise ValueError(f"bind {bind!r}: {addr!r} is not an IPv4 address or '*'") from None


def _valid_bind(bind: str) -> str:
    parse_bind(bind)
    return bind


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
Bind = Annotated[str, Word("bind", rf"(?:\*|{_OCTET}(?:\.{_OCTET}){{3}})?:{_PORT}",
                           "'ADDR:PORT', ':PORT' or '*:PORT' (IPv4, port 1-65535)"), AfterValidator(_valid_bind)]


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address or network (10.0.0.0/8, 192.0.2.7)") from None
    return value


SourceNet = Annotated[str, Word("address", r"[0-9A-Fa-f.:]{2,39}(?:/[0-9]{1,3})?",
                                "an IP address or network such as 10.0.0.0/8"), AfterValidator(_network)]
HeaderValue = Annotated[str, Word("header value", r"[!-~]{1,256}", "visible ASCII without spaces")]
Method = Annotated[str, Word("method", r"[A-Z]{1,16}", "an HTTP method in capitals (GET, POST)")]


def _error_code(code: int) -> int:
    if code not in ERROR_CODES:
        raise ValueError(f"HAProxy cannot answer {code}; it can answer {', '.join(map(str, ERROR_CODES))}")
    return code


ErrorCode = Annotated[int, AfterValidator(_error_code), WithJsonSchema({
    "enum": list(ERROR_CODES), "description": "a status HAProxy can answer with"})]


@dataclass(frozen=True)
class OneOrMore:
    """`Annotated[list[X], OneOrMore()]`: one value, or a list of at least one."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(
            lambda value: value if isinstance(value, list) else [value], handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        array = handler.resolve_ref_schema(handler(schema))
        return {"anyOf": [array["items"], {**array, "minItems": 1}]}


def strict(description: str) -> ConfigDict:
    return ConfigDict(defer_build=True, extra="forbid", json_schema_extra={"description": description})
