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

The modules: words (the constrained strings: one safe haproxy.cfg word each), hints (a host name where a
container belongs, haproxy.cfg carried over), models, checks (cross-references, clashes, binds), routing
(conditions as logic, access rules and routes as HAProxy takes them), render (haproxy.cfg), files (error
pages, rsyslog, tmpfiles.d).
"""

from .checks import frontend_at, listen_ports, validate_haproxy
from .files import (
    ERRORS_DIR,
    error_codes,
    error_page,
    error_page_files,
    rsyslog_files,
    support_dirs,
    support_files,
    tmpfiles_files,
)
from .hints import CONTAINER_NAME, HintBudget, Served, Serving, container_hint, routed_hosts, unknown_field_hint
from .models import (
    STATS_PROXY,
    TLS,
    AccessRule,
    Backend,
    Condition,
    Defaults,
    Frontend,
    Global,
    HAProxy,
    HealthCheck,
    Route,
    Server,
    Stats,
    Timeouts,
    When,
    WhenAll,
    WhenAny,
    WhenNot,
)
from .render import CLIENT_SEEN, CONFIG_PATH, SERVED_BY, MissingAddress, condition_text, render_config, server_containers
from .routing import Request, access_for, as_logic, backend_for, condition_holds
from .words import parse_bind

__all__ = [
    "CLIENT_SEEN", "CONFIG_PATH", "CONTAINER_NAME", "ERRORS_DIR", "SERVED_BY", "STATS_PROXY", "TLS", "AccessRule", "Backend",
    "Condition", "Defaults", "Frontend", "Global", "HAProxy", "HealthCheck", "HintBudget", "MissingAddress", "Request",
    "Route", "Served", "Server", "Serving", "Stats", "Timeouts", "When", "WhenAll", "WhenAny", "WhenNot", "access_for",
    "as_logic", "backend_for", "condition_holds", "condition_text", "container_hint", "error_codes", "error_page",
    "error_page_files", "frontend_at", "listen_ports", "parse_bind", "render_config", "routed_hosts", "rsyslog_files",
    "server_containers", "support_dirs", "support_files", "tmpfiles_files", "unknown_field_hint", "validate_haproxy",
]
