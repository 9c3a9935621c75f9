"""Reading lxc's remotes without contacting LXD: where the configuration is, what a bad one says,
which remote is chosen, and how a session is pinned. (Connections: tests/test_lxd_remote.py.)"""

from __future__ import annotations

import hashlib
import os
import ssl
from pathlib import Path

import pytest
import yaml
from conftest import sh

from reconciler import check, remote
from reconciler.remote import RemoteError, choose, load
from reconciler.spec import load_lab

GOOD = {"addr": "https://127.0.0.1:8443", "protocol": "lxd", "public": False}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """client.crt, client.key and a server certificate, made with openssl."""
    out = tmp_path_factory.mktemp("certs")
    for name in ("client", "server"):
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
           "-keyout", str(out / f"{name}.key"), "-out", str(out / f"{name}.crt"), "-days", "30", "-subj", f"/CN={name}")
    return out


def lxc_dir(path: Path, certificates: Path, remotes: dict | None = None, text: str | None = None) -> Path:
    """An lxc configuration directory as `lxc remote add` leaves it."""
    (path / "servercerts").mkdir(parents=True)
    for name in ("client.crt", "client.key"):
        (path / name).write_bytes((certificates / name).read_bytes())
    remotes = {"local": {"addr": "unix://"}, "lab": GOOD} if remotes is None else remotes
    for name in remotes:
        (path / "servercerts" / f"{name}.crt").write_bytes((certificates / "server.crt").read_bytes())
    (path / "config.yml").write_text(text if text is not None else yaml.safe_dump(
        {"default-remote": "local", "remotes": remotes, "aliases": {}}))
    return path


@pytest.fixture
def conf(tmp_path, certificates, monkeypatch) -> Path:
    monkeypatch.setenv("LXD_CONF", str(tmp_path / "lxc"))
    return lxc_dir(tmp_path / "lxc", certificates)


def refused(name: str = "lab", insecure: bool = False) -> str:
    with pytest.raises(RemoteError) as err:
        load(name, insecure)
    return str(err.value)


def test_a_remote_is_read_as_lxc_stored_it(conf, certificates):
    found = load("lab")
    assert found.url == "https://127.0.0.1:8443" and found.loopback and not found.insecure
    assert found.server_cert == conf / "servercerts" / "lab.crt" and found.client_key == conf / "client.key"
    der = ssl.PEM_cert_to_DER_cert((certificates / "server.crt").read_text())
    assert found.fingerprint() == hashlib.sha256(der).hexdigest()


def test_lxc_configuration_directory_lxd_conf_then_home_then_snap(tmp_path, certificates, monkeypatch):
    monkeypatch.delenv("LXD_CONF", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert remote.config_dir() == tmp_path / ".config" / "lxc"  # neither exists: the usual one is named
    lxc_dir(tmp_path / "snap" / "lxd" / "common" / "config", certificates)
    assert remote.config_dir() == tmp_path / "snap" / "lxd" / "common" / "config"
    lxc_dir(tmp_path / ".config" / "lxc", certificates)
    assert remote.config_dir() == tmp_path / ".config" / "lxc"
    monkeypatch.setenv("LXD_CONF", str(tmp_path / "elsewhere"))
    assert remote.config_dir() == tmp_path / "elsewhere"


@pytest.mark.parametrize("data, said", [
    (None, "no lxc configuration @/config.yml"),
    (b"remotes: [unclosed\n", "@/config.yml: not valid YAML at line 2; not an lxc configuration"),
    (b"- a list\n", "@/config.yml: no `remotes:` mapping of names to settings"),
    (b"remotes: {lab: https://x}\n", "@/config.yml: no `remotes:` mapping of names to settings"),
    (b"remotes: !!python/object:os.system {}\n", "@/config.yml: not valid YAML"),
    (b"\xff\xfe", "@/config.yml: not valid YAML"),
    (b"#" * (remote.MAX_CONFIG_BYTES + 1), "@/config.yml: larger than 1024 KiB"),
])
def test_a_missing_or_malformed_configuration_names_the_file(conf, data, said):
    if data is None:
        (conf / "config.yml").unlink()
    else:
        (conf / "config.yml").write_bytes(data)
    assert refused().startswith(said.replace("@", str(conf)))


@pytest.mark.parametrize("entry, said", [
    ({"addr": "https://images.example", "protocol": "simplestreams"}, "is an image server (protocol simplestreams)"),
    ({**GOOD, "protocol": "oci"}, "protocol 'oci' is not supported (only lxd, incus)"),
    ({**GOOD, "auth_type": "candid"}, "uses auth_type 'candid'; reconcile authenticates with TLS client"),
    ({"addr": "unix:///run/other.socket"}, "is a unix socket (unix:///run/other.socket): set lxd.socket"),
    ({"addr": "http://127.0.0.1:8443"}, "addr 'http://127.0.0.1:8443' is not https://HOST[:PORT]"),
    ({"addr": "https://127.0.0.1:port"}, "is not https://HOST[:PORT]"),
    ({"addr": "https://127.0.0.1:8443/1.0?x"}, "is not https://HOST[:PORT]"),
    ({}, "addr '' is not https://HOST[:PORT]"),
])
def test_a_remote_that_is_not_an_lxd_over_tls_is_refused(tmp_path, certificates, monkeypatch, entry, said):
    monkeypatch.setenv("LXD_CONF", str(lxc_dir(tmp_path, certificates, {"lab": entry})))
    assert said in refused()


def test_only_regular_files_are_read(conf):
    config = conf / "config.yml"
    config.unlink()
    os.mkfifo(config)  # would block an ordinary open() for ever
    assert refused() == f"cannot read the lxc configuration {config}: not a regular file"
    config.unlink()
    config.symlink_to("/dev/zero")
    assert refused() == f"cannot read the lxc configuration {config}: not a regular file"


def test_unknown_remotes_get_a_did_you_mean_or_the_list(conf):
    assert refused("lba").endswith("; did you mean 'lab'?")
    assert refused("zzz").endswith(f"no lxc remote 'zzz' in {conf}/config.yml (remotes there: lab, local)")
    assert refused("../lab") == "'../lab' is not an lxc remote name"


def test_certificates_missing_or_not_one_pem_certificate(conf, certificates):
    pinned = conf / "servercerts" / "lab.crt"
    text = pinned.read_text()
    pinned.write_text(text + text)
    assert refused().endswith(f"{pinned} does not hold exactly one PEM certificate")
    pinned.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    assert refused().endswith(f"{pinned} does not hold a valid certificate")
    pinned.unlink()
    assert f"no pinned server certificate {pinned}" in refused()
    assert load("lab", insecure=True).insecure  # nothing to pin against: only when lab.yaml says so
    (conf / "client.key").write_bytes((certificates / "server.key").read_bytes())  # not client.crt's key
    assert "cannot use the client certificate" in refused(insecure=True)
    (conf / "client.key").unlink()
    assert f"no client certificate {conf / 'client.key'}" in refused(insecure=True)


def test_choose_flag_over_lab_yaml_local_is_the_socket_default_remote_never(conf):
    (conf / "config.yml").write_text((conf / "config.yml").read_text().replace("default-remote: local",
                                                                               "default-remote: lab"))
    assert choose(None, None, False) is None  # lxc's default-remote is not used implicitly
    assert choose("local", "lab", False) is None
    assert choose(None, "local", False) is None
    assert choose("lab", "nosuch", False).name == "lab"  # the flag wins; lab.yaml's is not read
    assert choose(None, "lab", True).insecure
    assert not choose("lab", "other", True).insecure  # the skip belongs to the remote lab.yaml names


def test_a_session_trusts_the_pinned_certificate_only_and_compares_it_exactly(conf):
    found = load("lab")
    session = found.session()
    adapter = session.get_adapter("https://127.0.0.1:8443/1.0")
    kwargs = adapter.poolmanager.connection_pool_kw
    assert kwargs["assert_fingerprint"] == found.fingerprint()
    context = kwargs["ssl_context"]
    assert [ssl.DER_cert_to_PEM_cert(c) for c in context.get_ca_certs(binary_form=True)] == [
        ssl.DER_cert_to_PEM_cert(found.pinned)]
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname
    assert session.verify == str(found.server_cert) and not session.trust_env  # never the system CA bundle
    with pytest.raises(Exception, match="refusing plain HTTP"):
        session.get("http://127.0.0.1:8443/1.0")
    insecure = load("lab", insecure=True).session()
    assert insecure.verify is False
    assert "assert_fingerprint" not in insecure.get_adapter("https://x").poolmanager.connection_pool_kw


@pytest.mark.parametrize("lxd, said", [
    ("{remote: lab, socket: /var/lib/lxd/unix.socket}", "lxd: socket and remote 'lab' name two ways to LXD"),
    ("{insecure_skip_verify: true}", "lxd: insecure_skip_verify applies to an HTTPS remote only"),
    ("{remote: local, insecure_skip_verify: true}", "lxd: insecure_skip_verify applies to an HTTPS remote only"),
    ("{remote: lab, insecure_skip_verify: yes}", "lxd.insecure_skip_verify: Input should be a valid boolean"),
    ("{remote: ../lab}", "lxd.remote: '../lab' is not an lxc remote name"),
])
def test_lab_yaml_lxd_remote_fields(tmp_path, lxd, said):
    path = tmp_path / "lab.yaml"
    path.write_text(f"lab: t\nlxd: {lxd}\n")
    with pytest.raises(Exception) as err:
        load_lab(path)
    assert said in str(err.value)


def test_lab_yaml_accepts_a_remote_with_a_socket_only_when_it_is_local(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text("lab: t\nlxd: {remote: local, socket: /var/lib/lxd/unix.socket}\n")
    assert load_lab(path)[0].lxd.remote == "local"


CHECKED = """\
lab: t
containers:
  proxyha:
    image: reconciler-tiny
    devices:
      any: {type: proxy, listen: "tcp:[::]:18880", connect: "tcp:127.0.0.1:80"}  # a wildcard; never created
      here: {type: proxy, listen: "tcp:127.0.0.1:18881", connect: "tcp:127.0.0.1:80"}
"""


def test_check_asks_a_remote_machine_on_its_own_address_never_on_this_loopback(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(CHECKED)
    lab, _ = load_lab(path)
    where = lambda *remote: [point[:3] for point in check.entry_points(lab, "proxyha", 80, *remote)]
    assert where() == [("127.0.0.1", 18880, "127.0.0.1"), ("127.0.0.1", 18881, "127.0.0.1")]
    assert where("192.0.2.7") == [("192.0.2.7", 18880, "127.0.0.1")]
