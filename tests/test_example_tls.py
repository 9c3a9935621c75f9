"""examples/tls-routes.yaml on a real LXD with the Debian image: two HAProxy frontends (HTTP, and
HTTPS with a certificate made at apply inside the container), three Apache servers, path routes;
`reconcile check` proves both frontends and both routes."""

from __future__ import annotations

import json
import socket
import ssl

from conftest import ROOT, sh
from cryptography import x509
from cryptography.x509.oid import NameOID

HTTP_PORT, HTTPS_PORT = 18784, 18785


def peer_certificate(port: int) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="www.example.test") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def test_both_frontends_and_both_routes_are_proved_by_check(lab, monkeypatch):
    images = json.loads(sh("lxc", "image", "list", "reconciler-debian", "--format=json").stdout)
    assert images, "the Debian image is missing: make image-debian"
    for key, value in {"TLS_LAB": lab.tag, "TLS_PROJECT": lab.project, "TLS_SUBNET": "10.203.74.1/24",
                       "TLS_HTTP_PORT": str(HTTP_PORT), "TLS_HTTPS_PORT": str(HTTPS_PORT)}.items():
        monkeypatch.setenv(key, value)
    lab.file.write_text((ROOT / "examples" / "tls-routes.yaml").read_text().replace("tlsbr0", f"{lab.tag}n"))
    assert lab.run("validate").code == 0

    applied = lab.run("apply", "--yes")
    assert applied.code == 0, "\n".join(line for line in applied.out.splitlines() if "Error" in line or "FAILED" in line)
    check = lab.run("check")
    assert check.code == 0 and check.out.endswith("check passed\n"), check.out
    lines = check.out.splitlines()
    for where in (f"127.0.0.1:{HTTP_PORT}", f"https://127.0.0.1:{HTTPS_PORT}"):
        [web] = [line for line in lines if line.startswith(f"www.example.test via {where} -> backend web: ")]
        assert "app1(SITE1)" in web and "app2(SITE2)" in web and "SITEAPI" not in web
        [api] = [line for line in lines if line.startswith(f"www.example.test/api/ via {where} -> backend api: ")]
        assert api.count("api1(SITEAPI)") == 6

    certificate = peer_certificate(HTTPS_PORT)  # made inside edge at apply, by openssl
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "www.example.test"
    assert lab.lxc("exec", "edge", "--", "stat", "-c", "%a %U", "/etc/haproxy/certs/site.pem").strip() == "600 root"
    assert lab.lxc("exec", "edge", "--", "ls", "/etc/haproxy/certs").split() == ["site.cnf", "site.crt", "site.pem"]

    plan = lab.run("plan", "--detailed-exitcode")
    assert plan.code == 0, plan.out
    assert "PRIVATE KEY" not in applied.out + plan.out
