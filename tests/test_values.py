"""The value checks behind validate, and the schema patterns made of the same rules.  Pure."""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import values
from reconciler.provision import (
    PATH,
    SERVICE_NAME,
    validate_path,
    validate_service_name,
)
from reconciler.spec import Lab, network_overlaps


def schema_accepts(pattern: str, text: str) -> bool:
    """As jsonschema applies a `pattern`: re.search of the anchored pattern."""
    return re.search(values.anchored(pattern), text) is not None


# ---------------------------------------------------------------- paths
def test_no_character_that_splits_a_line_or_is_a_control_passes_validate_path():
    for code in range(sys.maxunicode + 1):
        c = chr(code)
        splits = len(("a" + c + "b").splitlines()) > 1
        control = code < 32 or 127 <= code < 160
        if splits or control:
            assert validate_path(f"/a{c}b") is not None, hex(code)
            assert not schema_accepts(PATH, f"/a{c}b"), hex(code)


@pytest.mark.parametrize("path", ["/", "/etc/app.conf", "/var/www/html/index.html", "/srv/café/ü.txt",
                                  "/a/.hidden", "/a/..b", "/a/b..", "/x/" + "y" * 255])
def test_canonical_absolute_paths_pass(path):
    assert validate_path(path) is None and schema_accepts(PATH, path)


@pytest.mark.parametrize("path, words", [
    ("etc/x", "absolute"), ("", "absolute"), ("/etc/", "end with '/'"), ("/etc//x", "'//'"),
    ("/etc/../x", "'..'"), ("/etc/./x", "'.'"), ("/..", "'..'"), ("/x/" + "y" * 256, "255 bytes"),
    ("/" + "/".join(["y" * 200] * 21), "4096 bytes"), ("/a\nb", "U+000A"), ("/a\u202eb", "U+202E"),
    ("/a\u200bb", "U+200B"), ("/a\x7fb", "U+007F"), ("/a\x9bb", "U+009B"),
])
def test_bad_paths_are_refused_with_the_rule_they_break(path, words):
    assert words in (validate_path(path) or ""), validate_path(path)
    assert not schema_accepts(PATH, path)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="/.ab\n\r\x00\x1b\u2028 é", max_size=12))
def test_the_path_pattern_and_validate_path_agree(text):
    assert (validate_path(text) is None) == schema_accepts(PATH, text), repr(text)


# ---------------------------------------------------------------- services
@pytest.mark.parametrize("name", ["apache2", "haproxy.service", "getty@tty1.service", "getty@tty1",
                                  "systemd-networkd.socket", "logrotate.timer", "multi-user.target",
                                  "dbus-org.freedesktop.resolve1", r"sys-dev\x2dblock.mount", "x" * 255])
def test_systemd_unit_names_pass(name):
    assert validate_service_name(name) is None and schema_accepts(SERVICE_NAME, name)


@pytest.mark.parametrize("name, words", [
    ("--host=root@evil", "not a systemd unit name"), ("-x", "not a systemd unit name"),
    ("a;b", "not a systemd unit name"), ("a b", "not a systemd unit name"), ("a\nb", "U+000A"),
    ("getty@", "template"), ("getty@.service", "template"), ("dev-sda.device", ".device unit"),
    ("user.slice", ".slice unit"), ("x" * 256, "longer than 255"), ("", "not a systemd unit name"),
    ("a@b@c", "not a systemd unit name"), ("$(reboot)", "not a systemd unit name"),
])
def test_bad_service_names_are_refused(name, words):
    assert words in (validate_service_name(name) or ""), validate_service_name(name)
    assert not schema_accepts(SERVICE_NAME, name)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab-.@:_\\;\n ", max_size=10))
def test_the_service_pattern_and_validate_agree(text):
    assert (validate_service_name(text) is None) == schema_accepts(SERVICE_NAME, text), repr(text)


# ---------------------------------------------------------------- proxy addresses
@pytest.mark.parametrize("address", ["tcp:127.0.0.1:80", "udp:0.0.0.0:53", "tcp:[::]:80", "tcp:[::1]:8080",
                                     "tcp:10.0.0.1:8000-9023", "unix:/run/app.sock", "unix:@app"])
def test_good_proxy_addresses(address):
    assert values.proxy_address_problem(address) is None
    assert schema_accepts(values.PROXY_ADDRESS, address)


@pytest.mark.parametrize("address, words", [
    ("tcp:not an ip:80", "not an IPv4"), ("tcp:999.999.999.999:80", "not an IPv4"),
    ("tcp:localhost:80", "no host names"), ("tcp:127.0.0.1:0", "not 1 to 65535"),
    ("tcp:127.0.0.1:65536", "not 1 to 65535"), ("tcp:127.0.0.1:90-80", "backwards"),
    ("tcp:127.0.0.1:1000-3000", "at most 1024"), ("tcp:*:80", "0.0.0.0"), ("tcp::80", "0.0.0.0"),
    ("tcp:[::1]:80,81", "is not tcp:ADDRESS:PORT"), ("tcp:::1:80", "is not tcp:ADDRESS:PORT"),
    ("tcp:[nope]:80", "bracketed IPv6"), ("http:127.0.0.1:80", "is not tcp:ADDRESS:PORT"),
    ("unix:run/app.sock", "absolute"), ("unix:/a\nb", "U+000A"), ("unix:@", "abstract"),
])
def test_bad_proxy_addresses(address, words):
    assert words in (values.proxy_address_problem(address) or ""), values.proxy_address_problem(address)


def test_port_count():
    assert values.port_count("tcp:127.0.0.1:80-89") == 10 and values.port_count("unix:/x") == 1


# ---------------------------------------------------------------- bridges
@pytest.mark.parametrize("key, value", [("ipv4.address", "10.203.7.1/24"), ("ipv4.address", "none"),
                                        ("ipv4.address", "auto"), ("ipv4.address", "192.168.50.254/30"),
                                        ("ipv6.address", "fd42:1::1/64"), ("ipv6.address", "none")])
def test_good_bridge_addresses(key, value):
    pattern = values.IPV4_CIDR if key == "ipv4.address" else values.IPV6_CIDR
    assert values.bridge_address_problem(key, value) is None and schema_accepts(pattern, value)


@pytest.mark.parametrize("key, value, words", [
    ("ipv4.address", "banana", "not an IPv4 address"), ("ipv4.address", "10.0.0.1", "prefix length"),
    ("ipv4.address", "fd42::1/64", "not an IPv4"), ("ipv4.address", "10.0.0.0/24", "network address"),
    ("ipv4.address", "10.0.0.255/24", "broadcast address"), ("ipv4.address", "10.0.0.1/31", "no address"),
    ("ipv4.address", "127.0.0.1/8", "loopback"), ("ipv4.address", "169.254.0.1/16", "link-local"),
    ("ipv4.address", "224.0.0.1/24", "multicast"), ("ipv4.address", "010.0.0.1/24", "not an IPv4"),
    ("ipv6.address", "10.0.0.1/24", "not an IPv6"), ("ipv6.address", "fe80::1/64", "link-local"),
    ("ipv6.address", "::1/128", "loopback"), ("ipv6.address", "fd42::/64", "network address"),
])
def test_bad_bridge_addresses(key, value, words):
    assert words in (values.bridge_address_problem(key, value) or ""), values.bridge_address_problem(key, value)


@pytest.mark.parametrize("key, value, address, words", [
    ("ipv4.dhcp.ranges", "10.0.0.100-10.0.0.200", "10.0.0.1/24", None),
    ("ipv4.dhcp.ranges", "10.0.0.10-10.0.0.20, 10.0.0.100-10.0.0.100", "10.0.0.1/24", None),
    ("ipv4.dhcp.ranges", "10.0.0.100-10.0.0.200", None, None),
    ("ipv4.dhcp.ranges", "10.0.0.100-10.0.0.200", "banana", None),  # the address's own problem is said there
    ("ipv6.dhcp.ranges", "fd42:1::100-fd42:1::200", "fd42:1::1/64", None),
    ("ipv4.dhcp.ranges", "10.0.0.200-10.0.0.100", "10.0.0.1/24", "ends before it starts"),
    ("ipv4.dhcp.ranges", "10.0.0.200-10.0.0.100", "10.0.0.300/24", "ends before it starts"),
    ("ipv4.dhcp.ranges", "10.0.1.100-10.0.1.200", "10.0.0.1/24", "not inside the bridge's subnet 10.0.0.0/24"),
    ("ipv4.dhcp.ranges", "10.0.0.100-10.0.1.200", "10.0.0.1/24", "not inside"),
    ("ipv4.dhcp.ranges", "10.0.0.100", "10.0.0.1/24", "not a range of two IPv4 addresses"),
    ("ipv4.dhcp.ranges", "10.0.0.1-10.0.0.2-10.0.0.3", None, "not a range"),
    ("ipv4.dhcp.ranges", "fd42::1-fd42::2", None, "not a range of two IPv4"),
    ("ipv6.dhcp.ranges", "10.0.0.1-10.0.0.2", None, "not a range of two IPv6"),
    ("ipv4.dhcp.ranges", "10.0.0.10-10.0.0.20,", "10.0.0.1/24", "'' is not a range"),
])
def test_bridge_dhcp_ranges(key, value, address, words):
    problem = values.dhcp_ranges_problem(key, value, address)
    assert (problem is None) if words is None else words in (problem or ""), problem


@pytest.mark.parametrize("value, problem", [("true", False), ("false", False), ("yes", False), ("0", False),
                                            ("maybe", True), ("True", True), ("", True)])
def test_lxd_booleans(value, problem):
    assert (values.bool_problem(value) is not None) == problem


# ---------------------------------------------------------------- network_overlaps
def lab(**networks: str) -> Lab:
    return Lab.model_validate({"lab": "l", "networks": {
        name: {"config": {"ipv4.address": addr} if "." in addr else {"ipv6.address": addr}}
        for name, addr in networks.items()}})


def test_overlaps_name_both_networks():
    found = network_overlaps(lab(lan0="10.1.0.1/24"), [], {"lxdbr0": "10.1.0.1/16"})
    assert found == ["network 'lan0' (ipv4.address 10.1.0.1/24) overlaps LXD network 'lxdbr0' (10.1.0.1/16)"]


def test_a_network_of_the_labs_own_name_is_itself():
    assert network_overlaps(lab(lan0="10.1.0.1/24"), ["10.1.0.0/24 dev lan0"], {"lan0": "10.1.0.1/24"}) == []


def test_host_routes_overlap_unless_they_are_default_or_lxds_own():
    routes = ["default via 192.168.1.1 dev eno1", "192.168.1.0/24 dev eno1 proto kernel scope link",
              "10.50.0.0/24 dev lxdbr0", "10.1.0.0/24 dev lan0", "junk"]
    found = network_overlaps(lab(lan0="10.1.0.1/24", lan1="192.168.1.200/28", lan2="10.50.0.1/24"), routes,
                             {"lxdbr0": "10.60.0.1/24", "lxdbr1": "10.50.0.1/24"})
    assert found == [
        ("network 'lan1' (ipv4.address 192.168.1.200/28) overlaps the host route"
        " '192.168.1.0/24 dev eno1 proto kernel scope link'"),
        "network 'lan2' (ipv4.address 10.50.0.1/24) overlaps LXD network 'lxdbr1' (10.50.0.1/24)"]


def test_ipv6_is_compared_with_ipv6_only():
    found = network_overlaps(lab(lan0="fd42:1::1/64"), ["fd42::/16 dev wg0", "10.0.0.0/8 dev eth1"],
                             {"lxdbr0": "none", "lxdbr1": "fd42:1::1/64"})
    assert found == ["network 'lan0' (ipv6.address fd42:1::1/64) overlaps LXD network 'lxdbr1' (fd42:1::1/64)",
                     "network 'lan0' (ipv6.address fd42:1::1/64) overlaps the host route 'fd42::/16 dev wg0'"]


def test_auto_and_none_take_no_subnet():
    assert network_overlaps(lab(lan0="auto"), ["0.0.0.0/1 dev x"], {"lxdbr0": "auto"}) == []
