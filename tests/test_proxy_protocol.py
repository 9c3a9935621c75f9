"""The client's real address: an LXD proxy device and the HAProxy frontend it reaches agree on the PROXY
protocol (both or neither), and haproxy.cfg names the devices that send it.  No LXD."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.haproxy import CONFIG_PATH
from reconciler.inside import render_file
from reconciler.source import SourceError
from reconciler.spec import load_lab, proxy_reaches

LAB = """\
lab: pp
profiles:
  base:
    devices:
      root: {type: disk, path: /, pool: default}
  front:
    devices:
      lan: {type: proxy, listen: "tcp:10.203.60.1:18600", connect: "tcp:127.0.0.1:80", proxy_protocol: true}
containers:
  web1: {image: reconciler-tiny, profiles: [base]}
  proxyha:
    image: reconciler-tiny
    profiles: [base, front]
    devices:
      http: {type: proxy, listen: "tcp:127.0.0.1:18601", connect: "tcp:127.0.0.1:80", proxy_protocol: true}
      admin: {type: proxy, listen: "tcp:127.0.0.1:18602", connect: "tcp:127.0.0.1:8404"}
haproxy:
  proxyha:
    frontends:
      http_frontend:
        bind: "*:80"
        accept_proxy: true
        default_backend: web
    backends:
      web: {servers: [{container: web1}]}
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(text))
    return load_lab(path, {})[0]


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SourceError) as caught:
        load(tmp_path, text)
    return [str(p).split(": ", 1)[1] for p in caught.value.problems]


def test_devices_that_send_the_header_pair_with_the_frontend_that_expects_it(tmp_path):
    lab = load(tmp_path, LAB)
    reaches = {(r.device, r.frontend, r.proxy_protocol) for r in proxy_reaches(lab)}
    assert reaches == {("lan", "http_frontend", True), ("http", "http_frontend", True)}  # admin reaches no frontend
    cfg = render_file(lab, tmp_path, "proxyha", CONFIG_PATH, {"web1": "10.203.60.5"}).decode()
    assert ("    # PROXY protocol from LXD proxy device(s): lan (tcp:10.203.60.1:18600), http (tcp:127.0.0.1:18601)\n"
            "    bind *:80 accept-proxy\n") in cfg


def test_a_frontend_expecting_the_header_from_a_device_that_does_not_send_it(tmp_path):
    text = LAB.replace(', connect: "tcp:127.0.0.1:80", proxy_protocol: true}\ncontainers',
                       ', connect: "tcp:127.0.0.1:80"}\ncontainers')
    assert problems(tmp_path, text) == [
        "haproxy.proxyha.frontends.http_frontend.accept_proxy: expects the PROXY protocol, but proxy device lan"
        " (tcp:10.203.60.1:18600) of proxyha does not send it: set proxy_protocol: true on it"]


def test_a_device_sending_the_header_to_a_frontend_that_does_not_expect_it(tmp_path):
    text = LAB.replace("        accept_proxy: true\n", "")
    found = problems(tmp_path, text)
    assert found == [
        "profiles.front.devices.lan.proxy_protocol: sends the PROXY protocol to frontend 'http_frontend' (*:80),"
        " which does not expect it: set accept_proxy: true there, or drop proxy_protocol",  # from its profile
        "containers.proxyha.devices.http.proxy_protocol: sends the PROXY protocol to frontend 'http_frontend'"
        " (*:80), which does not expect it: set accept_proxy: true there, or drop proxy_protocol"]


def test_a_nat_device_keeps_the_address_itself(tmp_path):
    text = LAB.replace('http: {type: proxy, listen: "tcp:127.0.0.1:18601", connect: "tcp:127.0.0.1:80", proxy_protocol:'
                       ' true}', 'http: {type: proxy, listen: "tcp:10.203.60.1:18601", connect: "tcp:127.0.0.1:80",'
                       ' nat: true}')
    assert "haproxy.proxyha.frontends.http_frontend.accept_proxy: proxy device http (tcp:10.203.60.1:18601) uses nat:" \
           " it keeps the client's address and sends no PROXY header; drop accept_proxy" in problems(tmp_path, text)


def test_a_frontend_bound_to_another_address_is_not_reached(tmp_path):
    text = LAB.replace('bind: "*:80"', 'bind: "10.203.60.9:80"').replace("        accept_proxy: true\n", "")
    lab = load(tmp_path, text)  # the devices connect to 127.0.0.1: nothing pairs, nothing to refuse
    assert proxy_reaches(lab) == []


LOOPBACK_LAB = LAB.replace("        accept_proxy: true\n", "        accept_proxy: loopback\n").replace(
    'lan: {type: proxy, listen: "tcp:10.203.60.1:18600", connect: "tcp:127.0.0.1:80", proxy_protocol: true}',
    'lan: {type: proxy, listen: "tcp:10.203.60.1:18600", connect: "tcp:10.203.60.5:80", nat: true}')


def test_loopback_expects_the_header_from_the_devices_and_lets_lan_clients_in_as_they_are(tmp_path):
    lab = load(tmp_path, LOOPBACK_LAB)  # a nat device connects to proxyha's own address: no header, none expected
    reaches = {(r.device, r.connect_address, r.proxy_protocol, r.nat) for r in proxy_reaches(lab)}
    assert reaches == {("lan", "10.203.60.5", False, True), ("http", "127.0.0.1", True, False)}
    cfg = render_file(lab, tmp_path, "proxyha", CONFIG_PATH, {"web1": "10.203.60.5"}).decode()
    assert ("    # PROXY protocol from LXD proxy device(s): http (tcp:127.0.0.1:18601)\n"
            "    bind *:80\n"
            "    tcp-request connection expect-proxy layer4 if { src 127.0.0.0/8 }\n") in cfg


def test_loopback_refuses_a_device_on_loopback_without_the_header(tmp_path):
    text = LOOPBACK_LAB.replace('connect: "tcp:127.0.0.1:80", proxy_protocol: true}', 'connect: "tcp:127.0.0.1:80"}')
    assert problems(tmp_path, text) == [
        "haproxy.proxyha.frontends.http_frontend.accept_proxy: expects the PROXY protocol, but proxy device http"
        " (tcp:127.0.0.1:18601) of proxyha does not send it: set proxy_protocol: true on it"]


def test_loopback_refuses_a_header_from_an_address_it_does_not_expect_one_from(tmp_path):
    text = LOOPBACK_LAB.replace('connect: "tcp:127.0.0.1:80", proxy_protocol: true}',
                                'connect: "tcp:10.203.60.5:80", proxy_protocol: true}')
    assert problems(tmp_path, text) == [
        "containers.proxyha.devices.http.proxy_protocol: sends the PROXY protocol to frontend 'http_frontend' from"
        " 10.203.60.5, but accept_proxy: loopback expects it only from 127.0.0.0/8: connect to 127.0.0.1, or set"
        " accept_proxy: true there"]


def test_the_shipped_lab_keeps_the_client_on_both_ways_in(tmp_path):
    """lab.yaml's devices send the header; its frontend expects it from them only (the LAN comes in directly)."""
    lab = load_lab(Path(__file__).resolve().parent.parent / "lab.yaml", {})[0]
    devices = lab.containers["proxyha"].devices
    assert devices["http"]["proxy_protocol"] == devices["https"]["proxy_protocol"] == "true"
    frontend = lab.haproxy["proxyha"].frontends["http_frontend"]
    assert frontend.accept_proxy == "loopback"
    assert frontend.expects_proxy_from("127.0.0.1") and not frontend.expects_proxy_from("10.203.7.1")
    assert [(r.device, r.frontend) for r in proxy_reaches(lab)] == [("http", "http_frontend")]  # nothing on 443 yet
