"""Trust options against a TLS front (Python's ssl module, certificates made by the openssl
command): public-key pins, a client certificate, and the final CERTIFICATE status of a
refused certificate (one attempt, no retry)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

import tether
from tether import Client, EventKind, Status

from conftest import Backend, foreign_env, gomuks_opts, wait_event

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, env=foreign_env())


class Pki:
    """A CA, a server certificate for localhost and a client certificate, in ``d``."""

    def __init__(self, d: Path, name: str) -> None:
        self.d = d
        p = lambda f: str(d / f"{name}-{f}")  # noqa: E731
        self.ca, self.ca_key = p("ca.pem"), p("ca.key")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "2",
                 "-subj", f"/CN={name} CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign")
        self.cert, self.key = self._issue(p("server"), "localhost",
                                          "subjectAltName=DNS:localhost\n"
                                          "extendedKeyUsage=serverAuth")
        self.client_cert, self.client_key = self._issue(p("client"), "client",
                                                        "extendedKeyUsage=clientAuth")

    def _issue(self, stem: str, cn: str, ext: str) -> Any:
        key, csr, cert, extf = stem + ".key", stem + ".csr", stem + ".pem", stem + ".ext"
        Path(extf).write_text(ext + "\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                 "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", extf)
        return cert, key

    def pin(self) -> str:
        """``sha256/`` and the base64 SHA-256 of the server key's SubjectPublicKeyInfo."""
        spki = subprocess.run(["openssl", "pkey", "-in", self.key, "-pubout", "-outform", "DER"],
                              check=True, capture_output=True, env=foreign_env()).stdout
        return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def read(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def crl(self, revoke: Optional[str]) -> bytes:
        """A CRL of this CA (``openssl ca -gencrl``), revoking the certificate ``revoke``."""
        d = self.d / f"ca-db-{revoke is not None}"
        d.mkdir(exist_ok=True)
        (d / "index.txt").write_text("")
        (d / "crlnumber").write_text("01\n")
        conf = d / "ca.cnf"
        conf.write_text(f"[ca]\ndefault_ca = d\n[d]\ndatabase = {d}/index.txt\n"
                        f"crlnumber = {d}/crlnumber\ndefault_md = sha256\ndefault_crl_days = 1\n")
        base = ["ca", "-config", str(conf), "-keyfile", self.ca_key, "-cert", self.ca]
        if revoke is not None:
            _openssl(*base, "-revoke", revoke)
        out = d / "crl.pem"
        _openssl(*base, "-gencrl", "-out", str(out))
        return out.read_bytes()


class Front:
    """TLS on 127.0.0.1 relaying to the backend; counts accepted TCP connections."""

    def __init__(self, backend: Backend, pki: Pki, client_ca: Optional[str] = None) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki.cert, pki.key)
        if client_ca:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(client_ca)
        self.backend = backend
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._relay, args=(raw,), daemon=True).start()

    def _relay(self, raw: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
            up = socket.create_connection(("127.0.0.1", self.backend.port))
        except (OSError, ssl.SSLError):
            raw.close()
            return

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(up, tls), daemon=True).start()
        pump(tls, up)

    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def close(self) -> None:
        self.stopped = True
        self.sock.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"), "test")


@pytest.fixture(scope="module")
def other(tmp_path_factory: Any) -> Pki:
    return Pki(tmp_path_factory.mktemp("other"), "other")


@pytest.fixture
def front(backend: Backend, pki: Pki) -> Iterator[Front]:
    f = Front(backend, pki)
    yield f
    f.close()


def refused_once(c: Client, front: Front) -> Any:
    d = wait_event(c, lambda e: e.kind == EventKind.DISCONNECTED)
    assert d.status == Status.ERR_CERTIFICATE, d.reason
    assert d.retry_in_ms is None
    assert isinstance(d.error, tether.CertificateError)
    assert isinstance(d.error, tether.TlsError)
    time.sleep(0.5)  # the backoff is 20 ms: a retry would show
    assert front.accepted == 1
    assert c.stats().connect_attempts == 1
    return d


def test_a_matching_pin_connects(front: Front, pki: Pki, other: Pki) -> None:
    opts = gomuks_opts(ca_pem=pki.read(pki.ca), pins=[other.pin(), pki.pin()])
    with Client(front.url(), **opts) as c:
        wait_event(c, lambda e: e.kind == EventKind.CONNECTED)
        assert c.request("echo", {"pinned": True}) == {"pinned": True}


def test_a_pin_mismatch_is_final(front: Front, pki: Pki, other: Pki) -> None:
    with Client(front.url(), **gomuks_opts(ca_pem=pki.read(pki.ca), pins=[other.pin()])) as c:
        d = refused_once(c, front)
        assert pki.pin() in d.reason


def test_a_revoked_certificate_is_final(front: Front, pki: Pki) -> None:
    opts = gomuks_opts(ca_pem=pki.read(pki.ca), crl_pem=pki.crl(revoke=None))
    with Client(front.url(), **opts) as c:
        assert c.request("echo", {"listed": False}) == {"listed": False}
    front.accepted = 0  # the login and the websocket above
    with Client(front.url(), **gomuks_opts(ca_pem=pki.read(pki.ca), crl_pem=pki.crl(revoke=pki.cert))) as c:
        d = refused_once(c, front)
        assert "Revoked" in d.reason


def test_an_unknown_ca_is_final(front: Front) -> None:
    with Client(front.url(), **gomuks_opts()) as c:
        refused_once(c, front)


def test_a_client_certificate_is_shown(backend: Backend, pki: Pki) -> None:
    f = Front(backend, pki, client_ca=pki.ca)
    try:
        cert = (pki.read(pki.client_cert), pki.read(pki.client_key))
        with Client(f.url(), **gomuks_opts(ca_pem=pki.read(pki.ca), client_cert=cert)) as c:
            assert c.request("echo", {"mtls": 1}) == {"mtls": 1}
        f.accepted = 0  # the login and the websocket above
        with Client(f.url(), **gomuks_opts(ca_pem=pki.read(pki.ca))) as c:
            refused_once(c, f)
    finally:
        f.close()


def test_bad_trust_options_are_refused(pki: Pki, other: Pki) -> None:
    url = "https://localhost:1"
    with pytest.raises(tether.ConfigError):
        Client(url, pins=["sha256/tooshort"])
    with pytest.raises(tether.ConfigError):
        Client("ws://localhost:1", pins=[pki.pin()])
    with pytest.raises(tether.ConfigError) as e:
        Client(url, client_cert=(pki.read(pki.client_cert), pki.read(other.client_key)))
    assert "BEGIN" not in e.value.message
    # Over plain ws:// nobody would be shown it.
    with pytest.raises(tether.ConfigError, match="wss://"):
        Client("ws://localhost:1", client_cert=(pki.read(pki.client_cert), pki.read(pki.client_key)))
    with pytest.raises(TypeError):
        Client(url, pins="sha256/not-a-list")
    with pytest.raises(tether.InvalidArgumentError):
        Client(url, client_cert=(b"", b""))
    with pytest.raises(tether.ConfigError, match="CRL"):
        Client(url, crl_pem=b"not a CRL")
    Client(url, use_os_trust=True).close()
