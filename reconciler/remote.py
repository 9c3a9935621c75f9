"""lxc's remotes, as `lxc remote add` stored them, and HTTPS sessions pinned to their certificates.

A remote is read from the lxc client configuration ($LXD_CONF, else ~/.config/lxc, else the
snap's ~/snap/lxd/common/config), or from the incus client's ($INCUS_CONF, else ~/.config/incus)
for a lab on Incus (`lxd.daemon: incus`; without it, lxc's first, then incus's if lxc has no such
remote): `config.yml` for its address, `servercerts/NAME.crt` for the
server certificate accepted when it was added, `client.crt` and `client.key` for who we are.

Pinning: the TLS context trusts the pinned certificate and nothing else (no system CAs, no host
name check, since LXD's certificates are self-signed and rarely name the address), so an impostor
fails inside the handshake, before our client certificate or any request leaves; urllib3 then
compares the presented certificate's SHA-256 with the pinned one's, so only that exact
certificate passes, not another one its key signed.

Only the standard library and requests: pylxd stays in lxd.py.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import errno
import hashlib
import ipaddress
import os
import re
import socket
import ssl
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import yaml
from urllib3.exceptions import InsecureRequestWarning

from .spec import REMOTE_NAME

LOCAL = "local"  # lxc's own name for the unix socket; never read from config.yml
MAX_CONFIG_BYTES = 1024 * 1024
MAX_CERT_BYTES = 64 * 1024
PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)
CONNECT_TIMEOUT, READ_TIMEOUT = 10, 120  # reads include LXD's 30 s operation waits
# OpenSSL's words for "a certificate the pin does not vouch for"; other reasons (expired, ...) are shown.
UNTRUSTED = ("self-signed certificate", "self signed certificate", "unable to get local issuer certificate",
             "another certificate than the pinned one", "certificate verify failed")


class RemoteError(Exception):
    """A remote that cannot be used, or a server that is not the one pinned; one line for the user."""


@dataclass(frozen=True)
class Remote:
    """One lxc remote of protocol `lxd`, ready to connect to."""

    name: str
    url: str  # https://host:port, as lxc stored it
    config_dir: Path
    client_cert: Path
    client_key: Path
    server_cert: Path  # the pinned certificate's file, named in messages
    pinned: bytes | None  # its DER; None only when lab.yaml turned verification off

    @property
    def insecure(self) -> bool:
        return self.pinned is None

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def __str__(self) -> str:
        return f"remote {self.name!r} ({self.url})"

    def fingerprint(self) -> str:
        return hashlib.sha256(self.pinned or b"").hexdigest()

    def session(self) -> requests.Session:
        """A requests session that speaks only to this remote's pinned server, as our client certificate."""
        session = requests.Session()
        session.trust_env = False  # no proxy or CA bundle from the environment: straight to the remote
        # Never True: requests would add the system CA bundle to the trust anchors.
        session.verify = False if self.insecure else str(self.server_cert)
        session.mount("https://", _PinnedAdapter(self._context(), None if self.insecure else self.fingerprint()))
        session.mount("http://", _Refused())
        if self.insecure:
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)  # said once, loudly, by the CLI
        return session

    def _context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # LXD's own floor
        context.check_hostname = False  # the pinned certificate is the identity, not a name inside it
        if self.pinned is None:
            context.verify_mode = ssl.CERT_NONE
        else:
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the pin is the trust anchor, CA or not
            context.load_verify_locations(cadata=self.pinned)
        try:
            context.load_cert_chain(self.client_cert, self.client_key)
        except (ssl.SSLError, OSError) as err:
            raise RemoteError(f"{self}: cannot use the client certificate {self.client_cert} with key"
                              f" {self.client_key}: {err}") from None
        return context

    def refusal(self, err: BaseException) -> str | None:
        """The message for a connection refused by pinning, if that is what `err` (or its cause) is."""
        reason = _verification_failure(err)
        if reason is None:
            return None
        presented = self.presented_fingerprint()
        told = f"the server presents sha256 {presented}, " if presented else ""
        why = f" ({reason})" if reason not in UNTRUSTED else ""
        return (f"{self}: refused: {told}not the certificate pinned in {self.server_cert} (sha256"
                f" {self.fingerprint()}){why}; no request was sent. If the server's certificate changed on"
                f" purpose, compare it with `lxc info` there and add the remote again (lxc remote remove"
                f" {self.name}; lxc remote add {self.name} ...)")

    def presented_fingerprint(self) -> str | None:
        """SHA-256 of the certificate the server presents, for the refusal message: a bare handshake,
        without our client certificate, and no request."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        parts = urlsplit(self.url)
        try:
            with socket.create_connection((parts.hostname, parts.port or 443), timeout=CONNECT_TIMEOUT) as raw, \
                    context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
                der = tls.getpeercert(binary_form=True)
        except (OSError, ValueError):
            return None
        return hashlib.sha256(der).hexdigest() if der else None

    @property
    def timeout(self) -> tuple[int, int]:
        return CONNECT_TIMEOUT, READ_TIMEOUT


def _verification_failure(err: BaseException | None) -> str | None:
    """OpenSSL's or urllib3's reason, when `err` or one of its causes is a failed certificate check."""
    while err is not None:
        if isinstance(err, ssl.SSLCertVerificationError):
            return err.verify_message or "certificate verify failed"
        if "Fingerprints did not match" in str(err):
            return "another certificate than the pinned one"
        if "CERTIFICATE_VERIFY_FAILED" in str(err):  # only the text survived a re-raise
            found = re.search(r"certificate verify failed: ([^(]+?)\s*\(", str(err))
            return found.group(1) if found else "certificate verify failed"
        err = err.__cause__ or err.__context__
    return None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class _PinnedAdapter(requests.adapters.HTTPAdapter):
    """Every HTTPS connection of the session uses our TLS context and, when pinned, urllib3's
    fingerprint check, which runs right after the handshake and before the request is written."""

    def __init__(self, context: ssl.SSLContext, fingerprint: str | None):
        self._context, self._fingerprint = context, fingerprint
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        if self._fingerprint:
            kwargs["assert_fingerprint"] = self._fingerprint
        super().init_poolmanager(*args, **kwargs)


class _Refused(requests.adapters.BaseAdapter):
    """Plain HTTP is never spoken to a remote."""

    def send(self, request, *args, **kwargs):
        raise requests.exceptions.InvalidURL(f"refusing plain HTTP to {request.url}")

    def close(self) -> None:
        pass


# --- Reading lxc's configuration --------------------------------------------------------------

class NotListed(RemoteError):
    """The client's configuration is absent or does not name the remote: another client's may."""


CLIENTS = {"lxd": "lxc", "incus": "incus"}  # each daemon's command-line client, whose remotes are read


def config_dir(daemon: str = "lxd") -> Path:
    """Where the daemon's client keeps its configuration: incus's in $INCUS_CONF, else ~/.config/incus;
    lxc's in $LXD_CONF, else ~/.config/lxc, else the snap's."""
    if daemon == "incus":
        return Path(os.environ.get("INCUS_CONF") or Path("~/.config/incus").expanduser())
    if os.environ.get("LXD_CONF"):
        return Path(os.environ["LXD_CONF"])
    plain, snap = Path("~/.config/lxc").expanduser(), Path("~/snap/lxd/common/config").expanduser()
    return snap if not (plain / "config.yml").exists() and (snap / "config.yml").exists() else plain


def choose(flag: str | None, lab_remote: str | None, insecure_skip_verify: bool,
           daemon: str | None = None) -> Remote | None:
    """The remote to use: --remote, else lab.yaml's; None for the local socket. lxc's default-remote
    is never used implicitly. Skipping verification applies only to the remote lab.yaml names."""
    name = flag or lab_remote
    if not name or name == LOCAL:
        return None
    return load(name, insecure=insecure_skip_verify and name == lab_remote, daemon=daemon)


def load(name: str, insecure: bool = False, daemon: str | None = None) -> Remote:
    """The remote from the named daemon's client configuration; without one, lxc's, else incus's
    (when lxc's does not list it: then lxc's refusal is the one said)."""
    if not re.fullmatch(REMOTE_NAME, name):
        raise RemoteError(f"{name!r} is not an lxc remote name")
    first: NotListed | None = None
    for client in [daemon] if daemon else list(CLIENTS):
        try:
            return _load_from(name, insecure, client)
        except NotListed as err:
            first = first or err
    assert first is not None
    raise first


def _load_from(name: str, insecure: bool, daemon: str) -> Remote:
    directory = config_dir(daemon)
    remotes = read_remotes(directory / "config.yml", CLIENTS[daemon])
    entry = remotes.get(name)
    if entry is None:
        raise NotListed(_unknown(name, remotes, directory / "config.yml", CLIENTS[daemon]))
    url = _lxd_url(name, entry, directory / "config.yml")
    server_cert = directory / "servercerts" / f"{name}.crt"
    remote = Remote(name, url, directory, directory / "client.crt", directory / "client.key", server_cert,
                    None if insecure else read_certificate(server_cert, name))
    for path in (remote.client_cert, remote.client_key):
        if not path.is_file():
            raise RemoteError(f"{remote}: no client certificate {path} (lxc creates client.crt and client.key"
                              " when it first adds a remote)")
    remote._context()  # a bad key pair is said now, not as a connection failure
    return remote


def read_bounded(path: Path, limit: int) -> bytes:
    """At most limit + 1 bytes of a regular file (decided on the open descriptor: a FIFO cannot hang us)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return handle.read(limit + 1)


def read_remotes(path: Path, client: str = "lxc") -> dict[str, dict[str, Any]]:
    """config.yml's `remotes:`, read safely: a regular file, bounded, plain YAML."""
    try:
        data = read_bounded(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        variable = "$INCUS_CONF" if client == "incus" else "$LXD_CONF"
        raise NotListed(f"no {client} configuration {path} (add the remote with `{client} remote add`, or set"
                        f" {variable} to the directory that holds config.yml)") from None
    except OSError as err:
        raise RemoteError(f"cannot read the lxc configuration {path}: {err.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise RemoteError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; not an lxc configuration")
    try:
        config = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RemoteError(f"{path}: not valid YAML{where}; not an lxc configuration") from None
    remotes = config.get("remotes") if isinstance(config, dict) else None
    if not isinstance(remotes, dict) or not all(isinstance(v, dict) for v in remotes.values()):
        raise RemoteError(f"{path}: no `remotes:` mapping of names to settings; not an lxc configuration")
    return {str(k): v for k, v in remotes.items()}


def _unknown(name: str, remotes: dict[str, dict], path: Path, client: str = "lxc") -> str:
    close = difflib.get_close_matches(name, sorted(remotes), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (remotes there: {', '.join(sorted(remotes)) or 'none'})"
    return f"no {client} remote {name!r} in {path}{hint}"


def _lxd_url(name: str, entry: dict[str, Any], path: Path) -> str:
    protocol = entry.get("protocol") or "lxd"
    addr = str(entry.get("addr") or "")
    if protocol == "simplestreams":
        raise RemoteError(f"remote {name!r} ({addr}) is an image server (protocol simplestreams), not an LXD"
                          " server: a lab needs a remote of protocol lxd")
    if protocol not in ("lxd", "incus"):  # the same API (incus stores its own name)
        raise RemoteError(f"remote {name!r} in {path}: protocol {protocol!r} is not supported (only lxd, incus)")
    auth = entry.get("auth_type") or "tls"
    if auth != "tls":
        raise RemoteError(f"remote {name!r} uses auth_type {auth!r}; reconcile authenticates with TLS client"
                          " certificates only")
    parts = urlsplit(addr)
    if parts.scheme == "unix":
        raise RemoteError(f"remote {name!r} is a unix socket ({addr}): set lxd.socket in lab.yaml instead")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme != "https" or not parts.hostname or port == -1 or parts.path.strip("/") or parts.query:
        raise RemoteError(f"remote {name!r} in {path}: addr {addr!r} is not https://HOST[:PORT]")
    return addr.rstrip("/")


def read_certificate(path: Path, name: str) -> bytes:
    """The one PEM certificate in `path`, as DER."""
    try:
        data = read_bounded(path, MAX_CERT_BYTES)
    except FileNotFoundError:
        raise RemoteError(f"remote {name!r}: no pinned server certificate {path} (lxc stores it when the remote"
                          " is added; add it again with `lxc remote add`)") from None
    except OSError as err:
        raise RemoteError(f"remote {name!r}: cannot read {path}: {err.strerror}") from None
    found = PEM_CERT.findall(data) if len(data) <= MAX_CERT_BYTES else []
    try:
        der = base64.b64decode(b"".join(found[0].split()), validate=True) if len(found) == 1 else b""
    except binascii.Error:
        der = b""
    if not der:
        raise RemoteError(f"remote {name!r}: {path} does not hold exactly one PEM certificate")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=der)
    except ssl.SSLError:
        raise RemoteError(f"remote {name!r}: {path} does not hold a valid certificate") from None
    return der
