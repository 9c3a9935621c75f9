"""HAProxy in lab terms: the `haproxy:` section of lab.yaml, its checks and its files.

Pure: no I/O, no pylxd; of the project, only logic.py (conditions). The section is keyed by the
container that runs HAProxy; backends name lab containers, never addresses, and the addresses come
from live state.

    haproxy:
      proxyha:                          # the container running HAProxy
        frontends:
          http_frontend:
            bind: "*:80"                # "ADDR:PORT", ":PORT" or "*:PORT" (IPv4)
            accept_proxy: loopback      # PROXY protocol from LXD proxy devices (127.0.0.1): the real client
                                        # address; clients on the LAN connect as they are (true: every connection)
            tls: {certificate: /etc/haproxy/certs/site.pem, redirect_http: true}
            access:                     # http-request rules before routing, first match decides
              - {action: deny, if: lan, status: 403}
              - {action: deny, if: {all: [api, {not: token}]}, status: 401}
            routes:                     # first match wins, in this order
              - {host: site1.testdomain.com, backend: subdomain1}
              - {host: site2.testdomain.com, path_prefix: /api, backend: subdomain2}
              - {if: {any: [api, token]}, backend: subdomain2}
            default_backend: subdomain1
        conditions:                     # named tests (acl lines), one matcher each
          lan: {src: [10.203.7.0/24]}
          api: {path_prefix: /api}
          token: {header: X-Lab-Token, value: open-sesame}
        backends:
          subdomain1:
            balance: roundrobin         # roundrobin | leastconn | source
            health_check: {path: /, interval: 2s, rise: 2, fall: 3}   # or true / false
            client_ip_header: X-Client-IP                            # null: not set
            forwardfor: true
            servers:
              - {name: site1, container: web1, port: 80, weight: 3, maxconn: 100}
              - {container: web2, backup: true}   # name defaults to the container
        stats: {port: 8404}             # the statistics page, on 127.0.0.1 inside the container
        error_pages: {503: "<html>...</html>", 408: null}   # override / drop a guide page
        logging: true                   # log to rsyslog through the chroot, like the guide
        global: {maxconn: 2000}
        defaults: {timeouts: {client: 30s}, options: [httplog, dontlognull, http-server-close]}

API (everything returns values; the caller writes the files):
- `HAProxy` is one container's section; lab.yaml's `haproxy:` maps container names to them.
- `validate_haproxy(section, containers, failed)` -> [(location, message)], cross references and
  clashes, judging nothing that depends on a `failed` place; names, hosts, paths, headers and binds
  are checked by the models themselves, so no value can split or add a haproxy.cfg line (config
  injection). A server written as a host name gets a hint: validation context `serving` (who serves
  a host: `routed_hosts(section, containers)` reads the routes of lab.yaml as read).
- `render_config(spec, addresses, errors_dir=ERRORS_DIR)` -> haproxy.cfg text, deterministic, for
  `CONFIG_PATH`; `server_containers(spec)` are the containers whose IPv4 it needs, and a missing
  one raises `MissingAddress` (a KeyError).
- `error_page_files(spec)`, `rsyslog_files(spec)`, `tmpfiles_files(spec)` -> {path: content};
  `support_files(spec)` is all three.
- `support_dirs(spec)` -> directories to create before HAProxy (re)starts: the error pages', the
  stats socket's (on tmpfs /run: tmpfiles.d recreates it at boot) and the log socket's.
- `backend_for(frontend, host, path)` and `access_for(frontend, conditions, request)` -> routing and
  access as haproxy.cfg does them (`reconcile check` uses them).
- `frontend_at(spec, address, port)` -> the frontend a connection reaches (LXD proxy devices pair
  with it: PROXY protocol on both sides or neither).
- Conditions are written in HAProxy's form (`a !b || c`: it has no parentheses); a rule no request
  can reach (behind a catch-all, narrower than one above, self-contradictory) is an error.
- Every backend sets `X-Served-By: <server name>` on responses, so a client can see who answered, and
  `X-Client-Seen: <address>`, the client's address as HAProxy saw it (`reconcile check` shows it).

Choices: Host is matched without its port (`req.hdr(host),field(1,:) -i NAME`, since clients send
`Host: name:8080` on other ports; `hdr_dom` would also match sub-domains). `path_prefix: /api`
matches /api and /api/..., not /apix. TLS terminates on the frontend's bind; `redirect_http` adds a
plain bind on `http_port` and `http-request redirect scheme https unless { ssl_fc }`, and HTTPS
requests get `X-Forwarded-Proto: https` (the guide's `reqadd` is gone since HAProxy 2.1).
`option forwardfor` is per backend because HAProxy cannot negate it from defaults. Log options
(httplog, dontlognull) are left out when logging is off, where HAProxy would warn about them.
Errorfiles have a CRLF head, as HTTP requires and HAProxy parses them at start-up.
"""

from __future__ import annotations

import difflib
import ipaddress
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NamedTuple, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import core_schema

from . import logic
from .source import NO_PATHS, PathSet

CONFIG_PATH = "/etc/haproxy/haproxy.cfg"
SERVED_BY = "X-Served-By"
CLIENT_SEEN = "X-Client-Seen"
# A proxy device connecting to 127.0.0.1 connects from here, inside the container; the kernel drops a
# packet from outside with such a source, so no LAN client can pose as one.
LOOPBACK = "127.0.0.0/8"
ERRORS_DIR = "/etc/haproxy/errors"
RSYSLOG_PATH = "/etc/rsyslog.d/99-haproxy.conf"
TMPFILES_PATH = "/etc/tmpfiles.d/haproxy-reconciler.conf"
HEADER = "# Generated by reconciler from lab.yaml. Do not edit: the next apply overwrites it.\n"

# Codes HAProxy can answer with an errorfile (configuration manual, "errorfile").
ERROR_CODES = (200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 500, 501, 502, 503, 504)
# The guide's seven pages: code -> (reason, body).
GUIDE_ERROR_PAGES: dict[int, tuple[str, str]] = {
    400: ("Bad request", "Your browser sent an invalid request."),
    403: ("Forbidden", "Request forbidden by administrative rules."),
    408: ("Request Time-out", "Your browser didn't send a complete request in time."),
    500: ("Internal Server Error", "An internal server error occurred."),
    502: ("Bad Gateway", "The server returned an invalid or incomplete response."),
    503: ("Service Unavailable", "No server is available to handle this request."),
    504: ("Gateway Time-out", "The server didn't respond in time."),
}
REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           407: "Proxy Authentication Required", 410: "Gone", 413: "Payload Too Large",
           425: "Too Early", 429: "Too Many Requests", 501: "Not Implemented"}
MAX_ERROR_BODY = 6000  # an errorfile must fit in tune.bufsize - tune.maxrewrite (8 kB by default)
LOG_OPTIONS = {"httplog", "dontlognull", "log-health-checks"}  # need a log target to mean anything


# ---------------------------------------------------------------- constrained strings
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


class Served(NamedTuple):
    """The lab containers that serve a host name as lab.yaml says: by its routes to `backends`, or
    (without backends) by naming it in their files."""

    containers: tuple[str, ...]
    backends: tuple[str, ...] = ()


Serving = Callable[[str], "Served | None"]  # a host name -> who serves it, if lab.yaml says


class HintBudget:
    """How many more names closest-name searches may compare (a search compares one with every lab
    container's), so that thousands of bad servers among thousands of containers are read in bounded time."""

    def __init__(self, comparisons: int):
        self.left = comparisons

    def take(self, comparisons: int) -> bool:
        self.left -= comparisons
        return self.left >= 0


def container_hint(name: str, containers: set[str] | frozenset[str], serving: Serving | None = None,
                   budget: HintBudget | None = None) -> str:
    """"; did you mean 'web2'?" for web2.testdomain.com (a host name where a container belongs): the
    container named by its first label, else those that serve it (`serving`), else the closest name
    (while the `budget` lasts)."""
    label = name.split(".")[0]
    if label != name and label in containers:
        return f"; did you mean {label!r}? (servers name lab containers, not host names)"
    served = serving(name) if serving is not None and "." in name else None
    if served:
        how = (f"lab.yaml routes {name} to backend {_listed(served.backends, 'or')}, served by"
               f" {_listed(served.containers, 'and')}" if served.backends else
               f"the files of {_listed(served.containers, 'and')} name {name}")
        return f"; did you mean {_listed(served.containers, 'or')}? (servers name lab containers, not host names; {how})"
    if budget is not None and not budget.take(len(containers)):
        return ""
    close = difflib.get_close_matches(name, sorted(containers), n=1) or \
        difflib.get_close_matches(label, sorted(containers), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _listed(names: Sequence[str], last: str) -> str:
    """'a', 'b' or 'c' (`last` "or"), 'a', 'b' and 'c' (`last` "and")."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {last} {quoted[-1]}"


def routed_hosts(section: Any, containers: set[str] | frozenset[str]) -> dict[str, Served]:
    """host (lowercase) -> the lab containers that serve it by routes: the servers of the backends its
    routes lead to.  `section` is lab.yaml's haproxy: as read, before validation: what does not read
    as routes and servers is passed over."""
    backends_of: dict[str, dict[str, None]] = {}
    servers_of: dict[str, dict[str, None]] = {}
    for spec in _mappings(section):
        backends = _mapping(spec.get("backends"))
        for frontend in _mappings(spec.get("frontends")):
            for route in _mappings(frontend.get("routes")):
                host, backend = route.get("host"), route.get("backend")
                if not (isinstance(host, str) and isinstance(backend, str)):
                    continue
                backends_of.setdefault(host.lower(), {})[backend] = None
                servers = _mappings(_mapping(backends.get(backend)).get("servers"))
                servers_of.setdefault(host.lower(), {}).update(
                    (s["container"], None) for s in servers if isinstance(s.get("container"), str)
                    and s["container"] in containers)
    return {host: Served(tuple(servers_of[host]), tuple(backends)) for host, backends in backends_of.items()
            if servers_of[host]}


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _mappings(value: Any) -> list[dict]:
    """The mappings in a list, or among a mapping's values: what reads as entries."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [v for v in items if isinstance(v, dict)]


def _lab_containers(info: ValidationInfo | None) -> set[str]:
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


CONTAINER_NAME = r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"  # LXD's instance names


def _container(value: str, info: ValidationInfo) -> str:
    why = _unsafe(value) or (None if re.fullmatch(CONTAINER_NAME, value) else "is not an LXD container name")
    if why:
        hint = container_hint(value, _lab_containers(info), _serving(info), _hint_budget(info))
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


def _strict(description: str) -> ConfigDict:
    return ConfigDict(defer_build=True, extra="forbid", json_schema_extra={"description": description})


# ---------------------------------------------------------------- models
class TLS(BaseModel):
    model_config = _strict("Terminate HTTPS on this frontend's bind.")
    certificate: AbsPath = Field(description="PEM file with certificate and private key, "
                                             "on the HAProxy container (bind ... ssl crt PATH).")
    redirect_http: bool = Field(False, description="Also listen for plain HTTP on `http_port` "
                                                   "and redirect it to https.")
    http_port: Port = Field(80, description="Plain HTTP port for `redirect_http`.")


class Condition(BaseModel):
    """A named test on a request (an HAProxy `acl`): exactly one of its matchers."""

    model_config = _strict("A named test on a request: exactly one of src, host, path, path_prefix, "
                           "method, header (with or without value). A list matches any of its values.")
    src: Annotated[list[SourceNet], OneOrMore()] | None = Field(
        None, description="The client's address is in one of these networks (the real client only "
                          "with PROXY protocol or nat: see accept_proxy).")
    host: Annotated[list[Hostname], OneOrMore()] | None = Field(None, description="Host, any port, any case.")
    path: Annotated[list[UrlPath], OneOrMore()] | None = Field(None, description="Exactly this path.")
    path_prefix: Annotated[list[UrlPath], OneOrMore()] | None = Field(
        None, description="This path or anything below it (/api: /api and /api/x, not /apix).")
    method: Annotated[list[Method], OneOrMore()] | None = Field(None, description="Request method.")
    header: HeaderName | None = Field(None, description="This request header: present, or with `value`.")
    value: Annotated[list[HeaderValue], OneOrMore()] | None = Field(
        None, description="With `header`: its value is exactly one of these (case matters).")

    @model_validator(mode="after")
    def _one_matcher(self) -> Condition:
        given = [k for k in MATCHERS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a condition tests exactly one of {', '.join(MATCHERS)}"
                             + (f"; this one has {', '.join(given)}: combine conditions with all:" if given else ""))
        if self.value is not None and self.header is None:
            raise ValueError("`value` goes with `header`")
        return self


MATCHERS = ("src", "host", "path", "path_prefix", "method", "header")


def _when_kind(value: Any) -> str:
    return "name" if isinstance(value, str) else next(iter(value))


def _when_shape(value: Any) -> Any:
    if isinstance(value, str) or (isinstance(value, dict) and len(value) == 1 and next(iter(value)) in
                                  ("all", "any", "not")):
        return value
    raise ValueError("a condition here is a condition's name, or one of {all: [...]}, {any: [...]}, {not: ...}")


class WhenAll(BaseModel):
    model_config = _strict("Every one of these holds.")
    all: list[When] = Field(min_length=1, description="Conditions that must all hold.")


class WhenAny(BaseModel):
    model_config = _strict("At least one of these holds.")
    any: list[When] = Field(min_length=1, description="Conditions of which one must hold.")


class WhenNot(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", populate_by_name=True,
                              json_schema_extra={"description": "This does not hold."})
    not_: When = Field(alias="not", description="A condition that must not hold.")


When = Annotated[Union[Annotated[Name, Tag("name")], Annotated[WhenAll, Tag("all")],  # noqa: UP007
                       Annotated[WhenAny, Tag("any")], Annotated[WhenNot, Tag("not")]],
                 Discriminator(_when_kind), BeforeValidator(_when_shape)]


class AccessRule(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", populate_by_name=True, json_schema_extra={
        "description": "Allow or deny requests before routing (http-request); the first matching rule decides."})
    action: Literal["allow", "deny"] = Field(description="deny: answer `status` (its error page); "
                                                         "allow: skip the rules below, then route.")
    if_: When | None = Field(None, alias="if", description="Which requests (default: every request).")
    status: ErrorCode | None = Field(None, description="With deny: the status answered (default 403).")

    @property
    def deny_status(self) -> int:
        return self.status or 403


class Route(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", populate_by_name=True, json_schema_extra={
        "description": "Send matching requests to a backend; the first matching route wins."})
    host: Hostname | None = Field(None, description="Match this Host (any port, any case).")
    path_prefix: UrlPath | None = Field(
        None, description="Match this path and everything below it: /api matches /api and "
                          "/api/x, not /apix.")
    if_: When | None = Field(None, alias="if", description="Match these conditions too "
                             "(names, all:, any:, not:).")
    backend: Name = Field(description="Backend that serves matching requests.")

    @model_validator(mode="after")
    def _matches_something(self) -> Route:
        if self.host is None and self.path_prefix is None and self.if_ is None:
            raise ValueError("a route needs `host`, `path_prefix`, `if` or several of them")
        return self


class Frontend(BaseModel):
    model_config = _strict("Where HAProxy listens and which backend serves what.")
    bind: Bind = Field(description="Listen address: '*:80', ':80' or '10.0.0.5:80'.")
    accept_proxy: bool | Literal["loopback"] = Field(
        False, description="true: every connection starts with a PROXY protocol header carrying the client's "
        "real address (LXD proxy devices with proxy_protocol: true send it); a connection without one is "
        "refused. loopback: only connections from the container's loopback (127.0.0.0/8, where proxy devices "
        "connecting to 127.0.0.1 come from) start with one; clients reaching HAProxy's own address directly "
        "(the LAN) connect as they are, and are seen as themselves.")
    tls: TLS | None = Field(None, description="HTTPS on this bind (optional).")
    access: list[AccessRule] = Field(default_factory=list, description="allow/deny rules, in order, "
                                     "before routing.")
    routes: list[Route] = Field(default_factory=list, description="Host/path/condition rules, in order.")
    default_backend: Name | None = Field(None, description="Backend for requests no route "
                                                           "matches (optional).")

    def expects_proxy_from(self, address: str) -> bool:
        """Whether a connection from `address`, inside the container, must start with a PROXY header."""
        if self.accept_proxy == "loopback":
            ip = ipaddress.ip_address(address)
            return ip.is_loopback or ip.is_unspecified  # connecting to 0.0.0.0 reaches the host itself
        return bool(self.accept_proxy)


class HealthCheck(BaseModel):
    model_config = _strict("Active health checks of this backend's servers.")
    path: UrlPath | None = Field(None, description="HTTP check: GET this path and expect "
                                                   "`expect_status`; without it a TCP connect.")
    expect_status: int = Field(200, ge=100, le=599, description="Status a healthy server "
                               "answers on `path` (Rocky's Apache welcome page answers 403).")
    interval: Duration = Field("2s", description="Time between checks.")
    rise: int = Field(2, ge=1, le=100, description="Successes before a server is up.")
    fall: int = Field(3, ge=1, le=100, description="Failures before a server is down.")


class Server(BaseModel):
    model_config = _strict("A lab container serving this backend.")
    name: Name | None = Field(None, description="Server name in HAProxy (default: container).")
    container: ContainerName = Field(description="Lab container; its live IPv4 is used.")
    port: Port = Field(80, description="Port the container serves on.")
    weight: int | None = Field(None, ge=0, le=256, description="Share of the requests relative to the "
                               "others (HAProxy's default 1; 0: none while others are up).")
    backup: bool = Field(False, description="Serves only while every server that is not a backup is down.")
    maxconn: int | None = Field(None, ge=1, le=1_000_000, description="At most this many connections at "
                                "once to this server; the rest wait in the backend's queue.")

    @model_validator(mode="before")
    @classmethod
    def _not_a_cfg_line(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, str):  # pydantic wants ValueError, not TypeError
            raise ValueError(server_line_hint(data, _lab_containers(info)))  # noqa: TRY004
        return data

    @property
    def label(self) -> str:
        """The server's name in haproxy.cfg."""
        return self.name or self.container


class Backend(BaseModel):
    model_config = _strict("A pool of lab containers behind HAProxy.")
    balance: Literal["roundrobin", "leastconn", "source"] = Field(
        "roundrobin", description="roundrobin: take turns; leastconn: fewest connections; "
                                  "source: same client, same server.")
    health_check: bool | HealthCheck = Field(True, description="true: plain `check`; false: none;"
                                                               " a mapping: tuned checks.")
    client_ip_header: HeaderName | None = Field(
        "X-Client-IP", description="Header set to the client address (null: none).")
    forwardfor: bool = Field(True, description="Add X-Forwarded-For (option forwardfor).")
    servers: list[Server] = Field(default_factory=list, description="Servers, in order.")


class Global(BaseModel):
    model_config = _strict("Process-wide settings; the defaults are the guide's.")
    maxconn: int | None = Field(None, gt=0, description="Maximum concurrent connections.")
    chroot: AbsPath = Field("/var/lib/haproxy", description="Directory HAProxy chroots into.")
    user: Account = Field("haproxy", description="User HAProxy runs as.")
    group: Account = Field("haproxy", description="Group HAProxy runs as.")
    stats_socket: AbsPath = Field("/run/haproxy/admin.sock", description="Admin socket path.")
    stats_timeout: Duration = Field("30s", description="Idle timeout of the admin socket.")
    tls_min_version: Literal["TLSv1.2", "TLSv1.3"] = Field(
        "TLSv1.2", description="Oldest TLS version accepted (when a frontend has tls).")


class Timeouts(BaseModel):
    model_config = _strict("Timeouts: milliseconds, or a HAProxy time such as 5s.")
    connect: Duration = Field(5000, description="Connecting to a server.")
    client: Duration = Field(50000, description="Client inactivity.")
    server: Duration = Field(50000, description="Server inactivity.")


Option = Literal["httplog", "dontlognull", "http-server-close", "http-keep-alive",
                 "redispatch", "abortonclose", "log-health-checks"]


DEFAULT_OPTIONS: tuple[Option, ...] = ("httplog", "dontlognull", "http-server-close")


class Defaults(BaseModel):
    model_config = _strict("Settings for every proxy (always mode http).")
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Timeouts.")
    options: list[Option] = Field(
        default_factory=lambda: list(DEFAULT_OPTIONS),
        description="`option` lines; log options apply only with logging. forwardfor is per "
                    "backend (HAProxy cannot negate it).")

    @model_validator(mode="after")
    def _unique(self) -> Defaults:
        if len(set(self.options)) != len(self.options):
            raise ValueError("an option is listed twice")
        return self


def _check_error_pages(pages: dict[int, str | None]) -> dict[int, str | None]:
    for code, body in pages.items():
        if code not in ERROR_CODES:
            raise ValueError(f"HAProxy has no error page {code}; it has {ERROR_CODES}")
        if body is not None and any(ord(c) < 32 and c not in "\t\n\r" for c in body):
            raise ValueError(f"error page {code} contains a control character")
        if body is not None and len(body.encode()) > MAX_ERROR_BODY:
            raise ValueError(f"error page {code} is over {MAX_ERROR_BODY} bytes")
    return pages


class HAProxy(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", populate_by_name=True, json_schema_extra={
        "description": "HAProxy on one container: frontends, backends of lab containers."})
    frontends: dict[Name, Frontend] = Field(default_factory=dict, description="Frontends by name.",
                                            json_schema_extra=NAME_KEYS)
    backends: dict[Name, Backend] = Field(default_factory=dict, description="Backends by name.",
                                          json_schema_extra=NAME_KEYS)
    error_pages: Annotated[dict[int, str | None], AfterValidator(_check_error_pages)] = Field(
        default_factory=dict, description="Status code -> HTML body replacing the guide's page "
                                          "(null drops it). The guide's: 400 403 408 500-504.",
        json_schema_extra={"propertyNames": {"enum": [str(c) for c in ERROR_CODES]}})
    logging: bool = Field(True, description="Log to /var/log/haproxy.log through rsyslog.")
    global_: Global = Field(default_factory=Global, alias="global",
                            description="Process-wide settings.")
    defaults: Defaults = Field(default_factory=Defaults, description="Proxy defaults.")
    conditions: dict[Name, Condition] = Field(default_factory=dict, description="Named tests on requests, "
                                              "for access rules and routes.", json_schema_extra=NAME_KEYS)
    stats: Stats | None = Field(None, description="HAProxy's statistics page, on 127.0.0.1 inside the "
                                "container only (optional).")


class Stats(BaseModel):
    model_config = _strict("HAProxy's statistics page (`listen stats`), bound to 127.0.0.1 inside the "
                           "HAProxy container: reach it with lxc exec, or a proxy device of your own.")
    port: Port = Field(8404, description="Port on 127.0.0.1.")
    uri: UrlPath = Field("/stats", description="Path of the page; add ;csv for CSV.")
    refresh: Duration = Field("10s", description="How often the page reloads itself.")


WhenAll.model_rebuild()
WhenAny.model_rebuild()
WhenNot.model_rebuild()
AccessRule.model_rebuild()
Route.model_rebuild()
HAProxy.model_rebuild()




# ---------------------------------------------------------------- the guide's haproxy.cfg
_SERVER_LINE = re.compile(r"server\s+([^\s:]+)\s+([^\s:]+)(?::([0-9]+))?(?:\s.*)?")


def server_line_hint(text: str, containers: set[str]) -> str:
    """What to write instead of a haproxy.cfg `server NAME HOST:PORT check` line."""
    if re.fullmatch(CONTAINER_NAME, text):
        return f"a server is a mapping, not a name: write {{container: {text}}}"
    match = _SERVER_LINE.fullmatch(text.strip())
    if not match:
        return "a server is a mapping such as {name: site1, container: web1, port: 80}"
    name, host, port = match[1], match[2], match[3] or "80"
    label = host.split(".")[0]
    close = difflib.get_close_matches(label, sorted(containers), n=1)
    container = label if label in containers else (close[0] if close else "CONTAINER")
    unknown = "" if container != "CONTAINER" else f", CONTAINER being the lab container that serves {host}"
    return (f"a server is a mapping of name, container and port, not a haproxy.cfg line: write"
            f" {{name: {name}, container: {container}, port: {port}}}{unknown}")


# Keys of haproxy.cfg that people carry over, at (section, key): where they go in lab.yaml.
_CFG_KEYS = {
    ("frontends", "acl"): "HAProxy acl/use_backend lines are written as routes: [{host: ..., backend: ...}]",
    ("frontends", "use_backend"): "HAProxy acl/use_backend lines are written as routes: [{host: ..., backend: ...}]",
    ("backends", "server"): "HAProxy server lines are written as servers: [{name: ..., container: ..., port: ...}]",
    ((), "frontend"): "frontends are written as frontends: {NAME: {bind: ..., routes: [...]}}",
    ((), "backend"): "backends are written as backends: {NAME: {servers: [...]}}",
}


def unknown_field_hint(loc: tuple) -> str:
    """Where an unknown field at `loc` (inside one container's section) goes, or ""."""
    section = loc[0] if len(loc) == 3 else ()
    return _CFG_KEYS.get((section, loc[-1]), "") if loc else ""


# ---------------------------------------------------------------- validation
Problem = tuple[tuple, str]


def _hint(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def validate_haproxy(section: dict[str, HAProxy], containers: set[str], failed: PathSet = NO_PATHS,
                     hints: HintBudget | None = None) -> list[Problem]:
    """Every cross-reference problem of the haproxy section, located inside it.

    `failed`: the places (HOST, ...) that failed the models' own checks and were left out or stood in
    for (spec.py's salvage); nothing that depends on them is judged.  `hints`: how many unknown
    containers get a closest-name search (default: all).
    """
    return [((host, *loc), msg) for host, spec in section.items()
            for loc, msg in _check(host, spec, containers, failed.under((host,)), hints)]


def _check(host: str, spec: HAProxy, containers: set[str], failed: PathSet, hints: HintBudget | None) -> list[Problem]:
    problems: list[Problem] = []
    if host not in containers:
        problems.append(((), f"HAProxy container {host!r} is not a lab container"
                             + container_hint(host, containers, budget=hints)))
    if not spec.frontends:
        problems.append((("frontends",), "no frontends: HAProxy would accept no traffic"))
    for name, backend in spec.backends.items():
        problems += [(("backends", name, *loc), msg)
                     for loc, msg in _check_backend(backend, containers, failed.under(("backends", name)), hints)]
    # a failed backends: or conditions: is left out whole: the names in it are unknown, not absent
    backends = None if failed.at(("backends",)) else set(spec.backends)
    conditions = None if failed.at(("conditions",)) else set(spec.conditions)
    for name, frontend in spec.frontends.items():
        problems += [(("frontends", name, *loc), msg)
                     for loc, msg in _check_frontend(frontend, backends)]
        problems += [(("frontends", name, *loc), msg)
                     for loc, msg in _check_conditions_used(frontend, conditions)]
        problems += [(("frontends", name, *loc), msg)
                     for loc, msg in _check_reachable(frontend, failed.under(("frontends", name)))]
    problems += [(("conditions", name), f"{name!r} is the name of a route's own acl in haproxy.cfg: pick another")
                 for name in spec.conditions if _ROUTE_ACL.fullmatch(name)]
    return problems + _check_binds(spec, failed) + _check_stats(spec)


_ROUTE_ACL = re.compile(r"route[0-9]+_(?:host|path)")


def _check_backend(backend: Backend, containers: set[str], failed: PathSet, hints: HintBudget | None) -> list[Problem]:
    if not backend.servers:
        return [(("servers",), "backend has no servers")]
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, server in enumerate(backend.servers):
        if failed.at(("servers", i)):
            continue  # a stand-in: its name is nobody's
        if server.container not in containers:
            problems.append((("servers", i, "container"), (f"{server.container!r} is not a lab "
                             f"container{container_hint(server.container, containers, budget=hints)}")))
        if server.label in seen:
            problems.append((("servers", i, "name"), (f"server name {server.label!r} is used "
                             "twice in this backend")))
        seen.add(server.label)
    return problems


def _check_frontend(frontend: Frontend, backends: set[str] | None) -> list[Problem]:
    """Backends named are declared (when `backends` are known), and access rules are whole."""
    refs: list[tuple[tuple, str]] = [(("routes", i, "backend"), r.backend) for i, r in enumerate(frontend.routes)]
    if frontend.default_backend is not None:
        refs.append((("default_backend",), frontend.default_backend))
    problems: list[Problem] = [(loc, f"unknown backend {name!r}{_hint(name, backends)}")
                               for loc, name in refs if backends is not None and name not in backends]
    if not refs:
        problems.append(((), ("frontend has no routes and no default_backend: it would answer "
                             "every request with 503")))
    # a check here, not in the model: a rule with a stray status is still judged for reachability
    return problems + [(("access", i, "status"), "`status` goes with action: deny (an allowed request is routed)")
                       for i, rule in enumerate(frontend.access) if rule.action == "allow" and rule.status is not None]


def _rules_with_conditions(frontend: Frontend) -> list[tuple[tuple, When]]:
    """(location, condition) of every `if` in the frontend's access rules and routes."""
    out = [(("access", i, "if"), r.if_) for i, r in enumerate(frontend.access) if r.if_ is not None]
    return out + [(("routes", i, "if"), r.if_) for i, r in enumerate(frontend.routes) if r.if_ is not None]


def _check_conditions_used(frontend: Frontend, known: set[str] | None) -> list[Problem]:
    problems: list[Problem] = []
    for loc, when in _rules_with_conditions(frontend):
        tree = as_logic(when)
        problems += [(loc, f"unknown condition {name!r}{_hint(name, known)} (declare it under conditions:)")
                     for name in logic.atoms(tree) if known is not None and name not in known]
        try:
            logic.dnf(tree)
        except logic.TooComplex as err:
            problems.append((loc, f"this condition has {err}"))
    return problems


def _check_reachable(frontend: Frontend, failed: PathSet) -> list[Problem]:
    """A rule no request can reach is a mistake (first match wins): an error, not a warning.  Rules are
    judged together, so a list with a rule stood in for is not judged."""
    access = [as_logic(r.if_) if r.if_ is not None else logic.TRUE for r in frontend.access]
    routes = [_route_logic(r) for r in frontend.routes]
    problems: list[Problem] = []
    for what, rules in (("access", access), ("routes", routes)):
        if failed.within((what,)):
            continue
        for found in logic.unreachable(rules):
            problems.append(((what, found.index), _unreachable_text(what, found, rules)))
    return problems


def _unreachable_text(what: str, found: logic.Unreachable, rules: list[logic.Condition]) -> str:
    noun = "access rule" if what == "access" else "route"
    if found.contradiction:
        return f"this {noun} can never match: its condition contradicts itself"
    if found.covered_by is not None and rules[found.covered_by] == logic.TRUE:
        return (f"unreachable: {noun} {found.covered_by} above has no `if` and takes every request"
                " (first match wins): move this one above it, or drop it")
    if found.covered_by is not None:
        return (f"unreachable: {noun} {found.covered_by} above already takes every request this one"
                " would match (first match wins): move this one above it, or drop it")
    return (f"unreachable: the {noun}s above it together take every request this one would match"
            " (first match wins)")


def _check_stats(spec: HAProxy) -> list[Problem]:
    if spec.stats is None:
        return []
    return [((section, STATS_PROXY), f"the stats page is the proxy {STATS_PROXY!r} in haproxy.cfg: "
             "rename this one") for section in ("frontends", "backends")
            if STATS_PROXY in getattr(spec, section)]


STATS_PROXY = "stats"


def _listeners(spec: HAProxy) -> list[tuple[tuple, str, str, int]]:
    """(location, what, address, port) of every socket HAProxy would bind, in order."""
    out: list[tuple[tuple, str, str, int]] = []
    for name, frontend in spec.frontends.items():
        addr, port = parse_bind(frontend.bind)
        out.append((("frontends", name, "bind"), f"frontend {name!r}", addr, port))
        if frontend.tls and frontend.tls.redirect_http:
            out.append((("frontends", name, "tls", "http_port"), f"frontend {name!r}", addr,
                        frontend.tls.http_port))
    if spec.stats is not None:
        out.append((("stats", "port"), "the stats page", "127.0.0.1", spec.stats.port))
    return out


def listen_ports(spec: HAProxy) -> list[int]:
    """TCP ports HAProxy must hold once it runs this configuration."""
    return sorted({port for _, _, _, port in _listeners(spec)})


def _check_binds(spec: HAProxy, failed: PathSet) -> list[Problem]:
    problems: list[Problem] = []
    listeners = [listener for listener in _listeners(spec) if not failed.at(listener[0])]  # no stand-in's bind
    for j, (loc, _, addr, port) in enumerate(listeners):
        for _, other, oaddr, oport in listeners[:j]:
            if port == oport and (addr == oaddr or "*" in (addr, oaddr)):
                problems.append((loc, f"port {port} is already bound by {other}"))
                break
    return problems


def frontend_at(spec: HAProxy, address: str, port: int) -> tuple[str, tuple] | None:
    """The frontend (and the location of its bind) that takes connections to address:port, or None."""
    for loc, _, addr, lport in _listeners(spec):
        if loc[0] == "frontends" and lport == port and addr in ("*", address):
            return loc[1], loc
    return None


# ---------------------------------------------------------------- conditions as logic
def as_logic(when: When) -> logic.Condition:
    """An `if` of lab.yaml as a condition over the names of its conditions."""
    if isinstance(when, str):
        return logic.Atom(when)
    if isinstance(when, WhenAll):
        return logic.All(tuple(as_logic(w) for w in when.all))
    if isinstance(when, WhenAny):
        return logic.AnyOf(tuple(as_logic(w) for w in when.any))
    return logic.Not(as_logic(when.not_))


def _route_logic(route: Route, host_atom: str | None = None, path_atom: str | None = None) -> logic.Condition:
    """What a route matches: its host, its path and its `if`, all of them.  The host and path are
    atoms named by their values (two routes on one host share it), or by the acl names given."""
    parts: list[logic.Condition] = []
    if route.host is not None:
        parts.append(logic.Atom(host_atom or f"host {route.host.lower()}"))
    if route.path_prefix is not None:
        parts.append(logic.Atom(path_atom or f"path_prefix {route.path_prefix}"))
    if route.if_ is not None:
        parts.append(as_logic(route.if_))
    return logic.All(tuple(parts))


# ---------------------------------------------------------------- routing
def _path_matches(prefix: str, path: str) -> bool:
    return prefix.endswith("/") and path.startswith(prefix) or path == prefix \
        or path.startswith(prefix + "/")


@dataclass(frozen=True)
class Request:
    """What HAProxy decides on: a request as it arrives (src: the client's address as HAProxy sees it)."""

    host: str
    path: str = "/"
    method: str = "GET"
    src: str = "127.0.0.1"
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


def condition_holds(cond: Condition, request: Request) -> bool:
    """One named condition on a request, as its haproxy.cfg acl decides it."""
    host = request.host.split(":")[0].lower()
    if cond.src is not None:
        address = ipaddress.ip_address(request.src)
        return any(address in ipaddress.ip_network(n, strict=False) for n in cond.src)
    if cond.host is not None:
        return host in (h.lower() for h in cond.host)
    if cond.path is not None:
        return request.path in cond.path
    if cond.path_prefix is not None:
        return any(_path_matches(p, request.path) for p in cond.path_prefix)
    if cond.method is not None:
        return request.method in cond.method
    value = request.header(cond.header or "")
    return value is not None and (cond.value is None or value in cond.value)


def _truth(conditions: Mapping[str, Condition], request: Request) -> dict[str, bool]:
    return {name: condition_holds(cond, request) for name, cond in conditions.items()}


def access_for(frontend: Frontend, conditions: Mapping[str, Condition], request: Request) -> int | None:
    """The index of the access rule that decides the request (allow or deny), or None."""
    truth = _truth(conditions, request)
    return next((i for i, rule in enumerate(frontend.access)
                 if rule.if_ is None or logic.evaluate(as_logic(rule.if_), truth)), None)


def backend_for(frontend: Frontend, host: str, path: str = "/", conditions: Mapping[str, Condition] | None = None,
                request: Request | None = None) -> str | None:
    """The backend HAProxy picks for a request, as the rendered rules do (None: 503).  Routes with an
    `if` are judged on `request` (GET of host and path from 127.0.0.1 unless given)."""
    request = request or Request(host, path)
    truth = _truth(conditions or {}, request)
    for route in frontend.routes:
        if route.host is not None and route.host.lower() != host.split(":")[0].lower():
            continue
        if route.path_prefix is not None and not _path_matches(route.path_prefix, path):
            continue
        if route.if_ is None or logic.evaluate(as_logic(route.if_), truth):
            return route.backend
    return frontend.default_backend


# ---------------------------------------------------------------- rendering
class MissingAddress(KeyError):
    """A backend server's container has no known IPv4 address."""

    def __str__(self) -> str:
        return str(self.args[0])


def _address(addresses: dict[str, str], container: str) -> str:
    if container not in addresses:
        raise MissingAddress(f"no IPv4 address known for container {container!r} "
                             "(is it running with a network?)")
    return str(ipaddress.IPv4Address(addresses[container]))


def _section(title: str, lines: list[str]) -> str:
    return "\n".join([title, *(f"    {line}" for line in lines)]) + "\n"


def _tls_used(spec: HAProxy) -> bool:
    return any(f.tls for f in spec.frontends.values())


def _global_lines(spec: HAProxy) -> list[str]:
    g = spec.global_
    lines = ["log /dev/log local0", "log /dev/log local1 notice"] if spec.logging else []
    lines += [f"chroot {g.chroot}",
              f"stats socket {g.stats_socket} mode 660 level admin expose-fd listeners",
              f"stats timeout {g.stats_timeout}", f"user {g.user}", f"group {g.group}", "daemon"]
    if g.maxconn:
        lines.append(f"maxconn {g.maxconn}")
    if _tls_used(spec):
        lines.append(f"ssl-default-bind-options ssl-min-ver {g.tls_min_version} no-tls-tickets")
    return lines


def error_codes(spec: HAProxy) -> list[int]:
    """Codes that get an errorfile: the guide's seven, with the spec's additions and drops."""
    codes = set(GUIDE_ERROR_PAGES) | {c for c, b in spec.error_pages.items() if b is not None}
    return sorted(c for c in codes if not (c in spec.error_pages and spec.error_pages[c] is None))


def _defaults_lines(spec: HAProxy, errors_dir: str) -> list[str]:
    d = spec.defaults
    options = [o for o in d.options if spec.logging or o not in LOG_OPTIONS]
    lines = (["log global"] if spec.logging else []) + ["mode http"]
    lines += [f"option {o}" for o in options]
    lines += [f"timeout {k} {getattr(d.timeouts, k)}" for k in ("connect", "client", "server")]
    return lines + [f"errorfile {c} {errors_dir}/{c}.http" for c in error_codes(spec)]


def condition_text(cond: logic.Condition) -> str:
    """HAProxy's form of a condition: `a !b || c`; "" when it always holds."""
    terms = logic.dnf(cond)
    if not terms:
        return "FALSE"  # HAProxy's predefined acl that never matches
    if () in terms:
        return ""
    return " || ".join(" ".join(("!" if negated else "") + key for negated, key in term) for term in terms)


def _guarded(line: str, cond: logic.Condition) -> str:
    text = condition_text(cond)
    return f"{line} if {text}" if text else line


def _route_lines(routes: list[Route]) -> list[str]:
    acls, uses = [], []
    for i, route in enumerate(routes, 1):
        if route.host is not None:
            acls.append(f"acl route{i}_host req.hdr(host),field(1,:) -i {route.host}")
        if route.path_prefix is not None:
            acls += _path_acls(f"route{i}_path", route.path_prefix)
        uses.append(_guarded(f"use_backend {route.backend}", _route_logic(route, f"route{i}_host", f"route{i}_path")))
    return acls + uses


def _path_acls(acl: str, prefix: str) -> list[str]:
    """`prefix` and what is below it; /api must not match /apix."""
    if prefix.endswith("/"):
        return [f"acl {acl} path_beg {prefix}"]
    return [f"acl {acl} path {prefix}", f"acl {acl} path_beg {prefix}/"]


def _condition_lines(name: str, cond: Condition) -> list[str]:
    """A named condition as haproxy.cfg acl lines (several lines of one name: any of them)."""
    if cond.src is not None:
        return [f"acl {name} src " + " ".join(str(ipaddress.ip_network(n, strict=False)) for n in cond.src)]
    if cond.host is not None:
        return [f"acl {name} req.hdr(host),field(1,:) -i " + " ".join(cond.host)]
    if cond.path is not None:
        return [f"acl {name} path " + " ".join(cond.path)]
    if cond.path_prefix is not None:
        return [line for prefix in cond.path_prefix for line in _path_acls(name, prefix)]
    if cond.method is not None:
        return [f"acl {name} method " + " ".join(cond.method)]
    if cond.value is not None:
        return [f"acl {name} req.hdr({cond.header}) -m str " + " ".join(cond.value)]
    return [f"acl {name} req.hdr({cond.header}) -m found"]


def _conditions_used(frontend: Frontend, conditions: Mapping[str, Condition]) -> list[str]:
    """acl lines of the named conditions this frontend uses, in the order lab.yaml declares them."""
    used = {name for _, when in _rules_with_conditions(frontend) for name in logic.atoms(as_logic(when))}
    return [line for name, cond in conditions.items() if name in used for line in _condition_lines(name, cond)]


def _access_lines(rules: list[AccessRule]) -> list[str]:
    out = []
    for rule in rules:
        head = f"http-request deny deny_status {rule.deny_status}" if rule.action == "deny" else "http-request allow"
        out.append(_guarded(head, as_logic(rule.if_) if rule.if_ is not None else logic.TRUE))
    return out


def _bind_lines(frontend: Frontend, proxied: Sequence[str]) -> list[str]:
    """The frontend's binds; with accept_proxy, a comment names the LXD proxy devices that send it.
    `true` puts accept-proxy on every bind; `loopback` expects the header from loopback sources only."""
    tls, extra = frontend.tls, " accept-proxy" if frontend.accept_proxy is True else ""
    lines = [f"# PROXY protocol from LXD proxy device(s): {', '.join(proxied)}"] if frontend.accept_proxy \
        and proxied else []
    lines.append(f"bind {frontend.bind}" + (f" ssl crt {tls.certificate}" if tls else "") + extra)
    if tls and tls.redirect_http:
        addr, _ = parse_bind(frontend.bind)
        lines.append(f"bind {addr}:{tls.http_port}{extra}")
    if frontend.accept_proxy == "loopback":
        lines.append(f"tcp-request connection expect-proxy layer4 if {{ src {LOOPBACK} }}")
    return lines


def _frontend_lines(frontend: Frontend, conditions: Mapping[str, Condition], proxied: Sequence[str]) -> list[str]:
    tls = frontend.tls
    lines = _bind_lines(frontend, proxied)
    if tls and tls.redirect_http:
        lines.append("http-request redirect scheme https code 301 unless { ssl_fc }")
    if tls:
        lines.append("http-request set-header X-Forwarded-Proto https if { ssl_fc }")
    lines += _conditions_used(frontend, conditions) + _access_lines(frontend.access)
    lines += _route_lines(frontend.routes)
    return lines + ([f"default_backend {frontend.default_backend}"]
                    if frontend.default_backend else [])


def _check_args(backend: Backend) -> str:
    hc = backend.health_check
    if isinstance(hc, HealthCheck):
        return f" check inter {hc.interval} rise {hc.rise} fall {hc.fall}"
    return " check" if hc else ""


def _server_line(server: Server, backend: Backend, addresses: dict[str, str]) -> str:
    extra = (f" weight {server.weight}" if server.weight is not None else "") + \
        (f" maxconn {server.maxconn}" if server.maxconn is not None else "") + (" backup" if server.backup else "")
    return f"server {server.label} {_address(addresses, server.container)}:{server.port}{_check_args(backend)}{extra}"


def _backend_lines(backend: Backend, addresses: dict[str, str]) -> list[str]:
    lines = [f"balance {backend.balance}"] + (["option forwardfor"] if backend.forwardfor else [])
    hc = backend.health_check
    if isinstance(hc, HealthCheck) and hc.path is not None:
        lines += [f"option httpchk GET {hc.path}", f"http-check expect status {hc.expect_status}"]
    if backend.client_ip_header:
        lines.append(f"http-request set-header {backend.client_ip_header} %[src]")
    lines.append(f"http-response set-header {SERVED_BY} %s")  # the server's name: `reconcile check` reads it
    lines.append(f"http-response set-header {CLIENT_SEEN} %[src]")  # and whom HAProxy took the client for
    return lines + [_server_line(s, backend, addresses) for s in backend.servers]


def _stats_lines(stats: Stats) -> list[str]:
    return [f"bind 127.0.0.1:{stats.port}", "stats enable", f"stats uri {stats.uri}",
            f"stats refresh {stats.refresh}"]


def render_config(spec: HAProxy, addresses: dict[str, str], *, errors_dir: str = ERRORS_DIR,
                  proxied: Mapping[str, Sequence[str]] | None = None) -> str:
    """The whole haproxy.cfg; servers resolve to `addresses[container]` (IPv4).  `proxied`: frontend ->
    the LXD proxy devices that send it the PROXY protocol (named in a comment above its bind).

    Raises MissingAddress (a KeyError) naming a server container without an address.
    Deterministic: the same spec and addresses give the same bytes; user order is kept.
    """
    proxied = proxied or {}
    parts = [HEADER, _section("global", _global_lines(spec)),
             _section("defaults", _defaults_lines(spec, errors_dir))]
    parts += [_section(f"frontend {n}", _frontend_lines(f, spec.conditions, proxied.get(n, ())))
              for n, f in spec.frontends.items()]
    parts += [_section(f"backend {n}", _backend_lines(b, addresses))
              for n, b in spec.backends.items()]
    if spec.stats is not None:
        parts.append(_section(f"listen {STATS_PROXY}", _stats_lines(spec.stats)))
    return "\n".join(parts)


# ---------------------------------------------------------------- support files
def _reason(code: int) -> str:
    return GUIDE_ERROR_PAGES[code][0] if code in GUIDE_ERROR_PAGES else REASONS[code]


def error_page(spec: HAProxy, code: int) -> str:
    """A raw HTTP/1.0 response as HAProxy sends it: CRLF head (HTTP requires it), HTML body."""
    status = f"{code} {_reason(code)}"
    body = spec.error_pages.get(code)
    if body is None:
        body = f"<html><body><h1>{status}</h1>\n{GUIDE_ERROR_PAGES[code][1]}\n</body></html>\n"
    head = [f"HTTP/1.0 {status}", "Cache-Control: no-cache", "Connection: close",
            "Content-Type: text/html", "", ""]
    return "\r\n".join(head) + body


def error_page_files(spec: HAProxy, *, errors_dir: str = ERRORS_DIR) -> dict[str, str]:
    """Path -> content of each errorfile named by haproxy.cfg."""
    return {f"{errors_dir}/{code}.http": error_page(spec, code) for code in error_codes(spec)}


def _log_socket(spec: HAProxy) -> str:
    """Where rsyslog listens: HAProxy's /dev/log seen from inside its chroot."""
    return posixpath.join(spec.global_.chroot, "dev/log")


def rsyslog_files(spec: HAProxy) -> dict[str, str]:
    """The guide's rsyslog set-up: a socket in the chroot, haproxy lines to their own file."""
    if not spec.logging:
        return {}
    return {RSYSLOG_PATH: (
        "# Generated by reconciler: HAProxy logs through a socket inside its chroot.\n"
        f"$AddUnixListenSocket {_log_socket(spec)}\n\n"
        "# Send HAProxy messages to a dedicated log file\n"
        ':programname, startswith, "haproxy" {\n  /var/log/haproxy.log\n  stop\n}\n')}


def tmpfiles_files(spec: HAProxy) -> dict[str, str]:
    """systemd-tmpfiles rule recreating the stats socket directory (on tmpfs /run) at boot."""
    g = spec.global_
    return {TMPFILES_PATH: (
        "# Generated by reconciler: HAProxy's runtime directory, recreated at every boot.\n"
        f"d {posixpath.dirname(g.stats_socket)} 0755 {g.user} {g.group} -\n")}


def support_files(spec: HAProxy, *, errors_dir: str = ERRORS_DIR) -> dict[str, str]:
    """Every file besides haproxy.cfg: error pages, rsyslog, tmpfiles.d."""
    return error_page_files(spec, errors_dir=errors_dir) | rsyslog_files(spec) \
        | tmpfiles_files(spec)


def support_dirs(spec: HAProxy, *, errors_dir: str = ERRORS_DIR) -> list[str]:
    """Directories that must exist before HAProxy (re)starts, parents first.

    /etc/haproxy and the chroot come with the haproxy package; /etc/rsyslog.d with rsyslog.
    """
    dirs = [errors_dir, posixpath.dirname(spec.global_.stats_socket)]
    if spec.logging:
        dirs.append(posixpath.dirname(_log_socket(spec)))
    return dirs


def server_containers(spec: HAProxy) -> set[str]:
    """Containers whose addresses render_config needs."""
    return {s.container for b in spec.backends.values() for s in b.servers}
