"""Values LXD reads from lab.yaml: proxy addresses, bridge addresses, booleans, subnets.

Pure: no I/O, no other project module. Each check returns the problem as one line, or None.
Each rule that a regular expression can say is also a pattern for schemas/lab.schema.json, so
the schema and `reconcile validate` read the same rule from one place.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

# Characters no name or path may hold: C0 and C1 controls, DEL, the line and paragraph
# separators (everything str.splitlines() splits on is among these), and the invisible
# characters that make a plan read differently from what it does (zero-width, bidi overrides).
UNSAFE_CHARS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff"
UNSAFE = re.compile(f"[{UNSAFE_CHARS}]")

OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{OCTET}(?:\.{OCTET}){{3}}"
IPV6_LOOSE = r"[0-9A-Fa-f:.]+"  # ipaddress decides; a regular expression for IPv6 is unreadable
PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
MAX_PORT_RANGE = 1024  # LXD starts one listener per port: a huge range exhausts the host


def anchored(pattern: str) -> str:
    """`pattern` as a whole-string JSON Schema pattern.

    `$(?!\\n)`: Python's re, which jsonschema uses, lets `$` match before a final newline.
    """
    return f"^(?:{pattern})$(?!\\n)"


@dataclass(frozen=True)
class Matching:
    """`Annotated[str, Matching(PATTERN, WHAT)]`: the whole string matches PATTERN, in the
    checks and in the schema alike; the error says `VALUE is not WHAT`."""

    pattern: str
    what: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        rx = re.compile(self.pattern)

        def check(value: str) -> str:
            if not rx.fullmatch(value):
                raise ValueError(f"{value!r} is not {self.what}")
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {"type": "string", "pattern": anchored(self.pattern), "description": self.what}


def unsafe_char(text: str) -> str | None:
    """The first character of `text` no name or path may hold, as U+XXXX, or None."""
    found = UNSAFE.search(text)
    return f"U+{ord(found.group()):04X}" if found else None


# --- Booleans -----------------------------------------------------------------------------

TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
BOOL_SCHEMA = {"anyOf": [{"type": "boolean"}, {"enum": [*TRUE_WORDS, *FALSE_WORDS, 1, 0]}]}


def bool_problem(value: str) -> str | None:
    """LXD's booleans, in their string form (YAML true is "true" by now)."""
    if value in TRUE_WORDS or value in FALSE_WORDS:
        return None
    return f"{value!r} is not a boolean (true or false)"


# --- Devices --------------------------------------------------------------------------------

DEVICE_TYPES = ("nic", "disk", "proxy", "unix-char", "unix-block", "unix-hotplug", "usb", "gpu", "infiniband",
                "tpm", "pci", "none")


# --- Proxy devices ------------------------------------------------------------------------

PROXY_KEYS = ("type", "listen", "connect", "bind", "nat", "proxy_protocol", "mode", "uid", "gid",
              "security.uid", "security.gid")
PROXY_BOOLS = ("nat", "proxy_protocol")
BIND_SIDES = ("host", "instance", "guest", "container")
WILDCARD_ADDRESSES = ("0.0.0.0", "[::]")
INET_ADDRESS = rf"(?:tcp|udp):(?:{IPV4}|\[{IPV6_LOOSE}\]):{PORT}(?:-{PORT})?"
UNIX_ADDRESS = rf"unix:(?:/[^{UNSAFE_CHARS}]{{1,4095}}|@[^{UNSAFE_CHARS}\s]{{1,107}})"
PROXY_ADDRESS = f"{INET_ADDRESS}|{UNIX_ADDRESS}"


def split_inet(address: str) -> tuple[str, str, str] | None:
    """'tcp:127.0.0.1:80' -> ('tcp', '127.0.0.1', '80'); None if it is not of that form."""
    match = re.fullmatch(r"(tcp|udp):(\[[^\]]*\]|[^:\[\]]*):([0-9]+(?:-[0-9]+)?)", address)
    return (match[1], match[2], match[3]) if match else None


def port_span(ports: str) -> tuple[int, int]:
    """'80' -> (80, 80); '80-90' -> (80, 90). Only for strings split_inet accepted."""
    low, _, high = ports.partition("-")
    return int(low), int(high or low)


def proxy_address_problem(address: str) -> str | None:
    """The problem with a proxy device's listen or connect address, or None."""
    if address.startswith("unix:"):
        return _unix_problem(address[5:])
    parts = split_inet(address)
    if parts is None:
        return (f"{address!r} is not tcp:ADDRESS:PORT, udp:ADDRESS:PORT or unix:PATH"
                " (a port range is LOW-HIGH; an IPv6 address goes in brackets)")
    return _host_problem(parts[1]) or _ports_problem(parts[2])


def _host_problem(host: str) -> str | None:
    if host in ("", "*"):
        return f"{host or 'an empty address'!r} is not an address: LXD wants 0.0.0.0 (every IPv4 address) or [::]"
    try:
        if host.startswith("["):
            ipaddress.IPv6Address(host[1:-1])
        else:
            ipaddress.IPv4Address(host)
    except ValueError:
        return f"{host!r} is not an IPv4 address or a bracketed IPv6 address (LXD takes no host names)"
    return None


def _ports_problem(ports: str) -> str | None:
    low, high = port_span(ports)
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        return f"port {high if 1 <= low <= 65535 else low} is not 1 to 65535"
    if low > high:
        return f"port range {ports} runs backwards (write LOW-HIGH)"
    if high - low + 1 > MAX_PORT_RANGE:
        return f"port range {ports} has {high - low + 1} ports; at most {MAX_PORT_RANGE}"
    return None


def _unix_problem(path: str) -> str | None:
    char = unsafe_char(path)
    if char:
        return f"the unix socket path contains the control or invisible character {char}"
    if path.startswith("@"):
        return None if 1 < len(path) <= 108 and not re.search(r"\s", path) else \
            "an abstract unix socket is @NAME: 1 to 107 characters, no spaces"
    if not path.startswith("/") or len(path) > 4096:
        return "a unix socket path must be absolute (unix:/run/app.sock) or abstract (unix:@name)"
    return None


def port_count(address: str) -> int:
    """How many ports a proxy address names (a unix socket counts as one)."""
    parts = split_inet(address)
    if parts is None:
        return 1
    low, high = port_span(parts[2])
    return high - low + 1


# --- Bridge networks ----------------------------------------------------------------------

BRIDGE_BOOLS = ("ipv4.nat", "ipv6.nat", "ipv4.dhcp", "ipv6.dhcp", "ipv6.dhcp.stateful", "ipv4.routing",
                "ipv6.routing", "ipv4.firewall", "ipv6.firewall")
IPV4_CIDR = rf"none|auto|{IPV4}/(?:[0-9]|[12][0-9]|30)"
IPV6_CIDR = r"none|auto|[0-9A-Fa-f:.]+/(?:[0-9]|[1-9][0-9]|1[01][0-9]|12[0-6])"


def bridge_address_problem(key: str, value: str) -> str | None:
    """The problem with a bridge's ipv4.address or ipv6.address, or None."""
    if value in ("none", "auto"):
        return None
    version = 4 if key == "ipv4.address" else 6
    example = "10.10.0.1/24" if version == 4 else "fd42:1::1/64"
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        iface = None
    if iface is None or iface.version != version or "/" not in value:
        return f"{value!r} is not an IPv{version} address with a prefix length (like {example}), none or auto"
    return _usable_problem(iface, example)


def _usable_problem(iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface, example: str) -> str | None:
    net, ip = iface.network, iface.ip
    if ip.is_loopback or ip.is_multicast or ip.is_link_local or ip.is_unspecified or ip.is_reserved:
        return f"{iface} is a loopback, multicast, link-local or reserved address: it would break the host's own networking"
    if net.num_addresses < 4:
        return f"/{net.prefixlen} leaves no address for containers (at most /30 for IPv4, /126 for IPv6)"
    if ip == net.network_address or (net.version == 4 and ip == net.broadcast_address):
        return f"{iface} is the network's own {'network' if ip == net.network_address else 'broadcast'} address;" \
               f" the bridge needs a host address (like {example})"
    return None


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPV4_RANGES = rf"{IPV4}-{IPV4}(?:\s*,\s*{IPV4}-{IPV4})*"  # the form only: validate checks order and subnet
DHCP_RANGE_KEYS = ("ipv4.dhcp.ranges", "ipv6.dhcp.ranges")


def dhcp_ranges_problem(key: str, value: str, address: str | None) -> str | None:
    """The problem with a bridge's ipv4.dhcp.ranges or ipv6.dhcp.ranges ("FIRST-LAST, ..."), or None; each
    range is checked against the bridge's subnet when `address` (its ipv4.address or ipv6.address) is one."""
    version = 4 if key.startswith("ipv4") else 6
    example = "10.10.0.100-10.10.0.200" if version == 4 else "fd42:1::100-fd42:1::200"
    net = bridge_subnet(f"ipv{version}.address", address or "none")
    for item in (part.strip() for part in value.split(",")):
        ends = address_range(item)
        if ends is None or ends[0].version != version:
            return f"{item!r} is not a range of two IPv{version} addresses FIRST-LAST (like {example})"
        first, last = ends
        if int(first) > int(last):
            return f"{item!r} ends before it starts"
        if net is not None and (first not in net or last not in net):
            return f"{item!r} is not inside the bridge's subnet {net} ({address})"
    return None


def address_range(item: str) -> tuple[IPAddress, IPAddress] | None:
    """'10.0.0.1-10.0.0.9' -> its two ends, of one family, in either order; None if it is not that."""
    low, dash, high = item.partition("-")
    try:
        first, last = ipaddress.ip_address(low), ipaddress.ip_address(high)
    except ValueError:
        return None
    return (first, last) if dash and first.version == last.version else None


def bridge_subnet(key: str, value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The subnet of a bridge's valid ipv4.address or ipv6.address (None for none, auto or a bad one)."""
    return None if bridge_address_problem(key, value) else subnet(value)


def subnet(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The subnet of a bridge address such as 10.0.0.1/24 (None for none, auto or nonsense)."""
    try:
        return ipaddress.ip_interface(value).network if "/" in value else None
    except ValueError:
        return None


def route_subnet(route: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network | None, str]:
    """('10.0.0.0/24 dev eno1' -> (10.0.0.0/24, 'eno1')): a route's destination and device."""
    words = route.split()
    device = words[words.index("dev") + 1] if "dev" in words[:-1] else ""
    if not words or words[0] == "default":
        return None, device
    try:
        return ipaddress.ip_network(words[0], strict=False), device
    except ValueError:
        return None, device


# LXD's sizes: a byte count, or one with a decimal (kB, MB, ...) or binary (KiB, MiB, ...) unit.
SIZE = re.compile(r"(\d{1,30})\s*([KMGTPE]i?B|B)?")
UNITS = {"B": 1, **{f"{u}B": 1000 ** (i + 1) for i, u in enumerate("KMGTPE")},
         **{f"{u}iB": 1024 ** (i + 1) for i, u in enumerate("KMGTPE")}}


def size_bytes(text: str | None) -> int | None:
    """LXD's size ("64MiB", "1GB", "1073741824") in bytes; None if absent or not of that form."""
    found = SIZE.fullmatch(text or "")
    return int(found.group(1)) * UNITS[found.group(2) or "B"] if found else None


def size_problem(text: str) -> str | None:
    if size_bytes(text) is None:
        return f"{text!r} is not a size LXD takes, such as 64MiB, 1GB or 1073741824"
    return None
