"""The pydantic models of one container's haproxy section: frontends, conditions, access rules,
routes, backends and servers, global settings and defaults, the stats page."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    model_validator,
)

from .hints import server_line_hint
from .words import (
    ERROR_CODES,
    NAME_KEYS,
    AbsPath,
    Account,
    Bind,
    ContainerName,
    Duration,
    ErrorCode,
    HeaderName,
    HeaderValue,
    Hostname,
    Method,
    Name,
    OneOrMore,
    Port,
    SourceNet,
    UrlPath,
    lab_containers,
    seconds,
    strict,
)

MAX_WAIT = 3600  # seconds: apply's waits on a backend are bounded
MAX_ERROR_BODY = 6000  # an errorfile must fit in tune.bufsize - tune.maxrewrite (8 kB by default)


class TLS(BaseModel):
    model_config = strict("Terminate HTTPS on this frontend's bind.")
    certificate: AbsPath = Field(description="PEM file with certificate and private key, "
                                             "on the HAProxy container (bind ... ssl crt PATH).")
    redirect_http: bool = Field(False, description="Also listen for plain HTTP on `http_port` "
                                                   "and redirect it to https.")
    http_port: Port = Field(80, description="Plain HTTP port for `redirect_http`.")


class Condition(BaseModel):
    """A named test on a request (an HAProxy `acl`): exactly one of its matchers."""

    model_config = strict("A named test on a request: exactly one of src, host, path, path_prefix, "
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
    """The condition's tag: from lab.yaml's data when validating, from the model when serialising (a saved
    plan's or a checkpoint's copy of the lab)."""
    if isinstance(value, BaseModel):
        return {"WhenAll": "all", "WhenAny": "any", "WhenNot": "not"}[type(value).__name__]
    return "name" if isinstance(value, str) else next(iter(value))


def _when_shape(value: Any) -> Any:
    if isinstance(value, str) or (isinstance(value, dict) and len(value) == 1 and next(iter(value)) in
                                  ("all", "any", "not")):
        return value
    raise ValueError("a condition here is a condition's name, or one of {all: [...]}, {any: [...]}, {not: ...}")


class WhenAll(BaseModel):
    model_config = strict("Every one of these holds.")
    all: list[When] = Field(min_length=1, description="Conditions that must all hold.")


class WhenAny(BaseModel):
    model_config = strict("At least one of these holds.")
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
    model_config = strict("Where HAProxy listens and which backend serves what.")
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
    model_config = strict("Active health checks of this backend's servers.")
    path: UrlPath | None = Field(None, description="HTTP check: GET this path and expect "
                                                   "`expect_status`; without it a TCP connect.")
    expect_status: int = Field(200, ge=100, le=599, description="Status a healthy server "
                               "answers on `path` (Rocky's Apache welcome page answers 403).")
    interval: Duration = Field("2s", description="Time between checks.")
    rise: int = Field(2, ge=1, le=100, description="Successes before a server is up.")
    fall: int = Field(3, ge=1, le=100, description="Failures before a server is down.")


class Server(BaseModel):
    model_config = strict("A lab container serving this backend.")
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
            raise ValueError(server_line_hint(data, lab_containers(info)))  # noqa: TRY004
        return data

    @property
    def label(self) -> str:
        """The server's name in haproxy.cfg."""
        return self.name or self.container


class Backend(BaseModel):
    model_config = strict("A pool of lab containers behind HAProxy.")
    balance: Literal["roundrobin", "leastconn", "source"] = Field(
        "roundrobin", description="roundrobin: take turns; leastconn: fewest connections; "
                                  "source: same client, same server.")
    health_check: bool | HealthCheck = Field(True, description="true: plain `check`; false: none;"
                                                               " a mapping: tuned checks.")
    client_ip_header: HeaderName | None = Field(
        "X-Client-IP", description="Header set to the client address (null: none).")
    forwardfor: bool = Field(True, description="Add X-Forwarded-For (option forwardfor).")
    servers: list[Server] = Field(default_factory=list, description="Servers, in order.")
    drain_timeout: Duration = Field("10s", description="Before apply restarts, stops or replaces a server's "
                                    "container: how long it waits for the server's sessions to end after "
                                    "draining it (then it goes on).")
    ready_timeout: Duration = Field("60s", description="After such a restart: how long the server has to pass "
                                    "its health check again before the step fails.")

    @model_validator(mode="after")
    def _bounded_waits(self) -> Backend:
        for name in ("drain_timeout", "ready_timeout"):
            if seconds(getattr(self, name)) > MAX_WAIT:
                raise ValueError(f"{name} is over {MAX_WAIT // 60} minutes")
        return self


class Global(BaseModel):
    model_config = strict("Process-wide settings; the defaults are the guide's.")
    maxconn: int | None = Field(None, gt=0, description="Maximum concurrent connections.")
    chroot: AbsPath = Field("/var/lib/haproxy", description="Directory HAProxy chroots into.")
    user: Account = Field("haproxy", description="User HAProxy runs as.")
    group: Account = Field("haproxy", description="Group HAProxy runs as.")
    stats_socket: AbsPath = Field("/run/haproxy/admin.sock", description="Admin socket path.")
    stats_timeout: Duration = Field("30s", description="Idle timeout of the admin socket.")
    tls_min_version: Literal["TLSv1.2", "TLSv1.3"] = Field(
        "TLSv1.2", description="Oldest TLS version accepted (when a frontend has tls).")


class Timeouts(BaseModel):
    model_config = strict("Timeouts: milliseconds, or a HAProxy time such as 5s.")
    connect: Duration = Field(5000, description="Connecting to a server.")
    client: Duration = Field(50000, description="Client inactivity.")
    server: Duration = Field(50000, description="Server inactivity.")


Option = Literal["httplog", "dontlognull", "http-server-close", "http-keep-alive",
                 "redispatch", "abortonclose", "log-health-checks"]


DEFAULT_OPTIONS: tuple[Option, ...] = ("httplog", "dontlognull", "http-server-close")


class Defaults(BaseModel):
    model_config = strict("Settings for every proxy (always mode http).")
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


STATS_PROXY = "stats"  # the stats page's proxy in haproxy.cfg: no frontend or backend may take its name


class Stats(BaseModel):
    model_config = strict("HAProxy's statistics page (`listen stats`), bound to 127.0.0.1 inside the "
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
