"""The public URL speaks TLS 1.2+ only, with the generated certificate, and sends HSTS."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
import warnings
from pathlib import Path
from urllib.parse import urlparse

import pytest

from hdshub import tls
from hdshub.tls import handshake

pytestmark = pytest.mark.docker

OLD_VERSIONS = ("TLSv1", "TLSv1_1")
CURRENT_VERSIONS = ("TLSv1_2", "TLSv1_3")


@pytest.fixture(scope="module")
def permissive_server(hub):
    """A local server that accepts TLS 1.0: proves the client above can speak it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.load_cert_chain(hub.runtime["tls_cert"], hub.runtime["tls_key"])
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def test_tls_1_0_and_1_1_are_refused_1_2_and_1_3_accepted(hub, permissive_server):
    for version in OLD_VERSIONS:  # the probe is able to speak them...
        assert not handshake("127.0.0.1", permissive_server, version).startswith("refused")
    url = urlparse(hub.public_url)
    for version in OLD_VERSIONS:  # ...and the proxy refuses them
        assert handshake(url.hostname, url.port, version).startswith("refused"), version
    assert handshake(url.hostname, url.port, "TLSv1_2") == "TLSv1.2"
    assert handshake(url.hostname, url.port, "TLSv1_3") == "TLSv1.3"


@pytest.mark.parametrize("suite", ["AES128-SHA", "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"])
def test_tls_1_2_without_forward_secrecy_or_aead_is_refused(hub, suite):
    url = urlparse(hub.public_url)
    assert handshake(url.hostname, url.port, "TLSv1_2", f"{suite}:@SECLEVEL=0").startswith("refused")


def test_plain_http_gets_no_page(hub):
    url = urlparse(hub.public_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as raw:
        raw.sendall(b"GET /hub/login HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = raw.recv(4096)
        except ConnectionError:
            answer = b""
    assert b"<html" not in answer.lower()


def test_hub_pages_send_hsts(hub):
    reply = hub.session().get(f"{hub.public_url}/hub/login", timeout=10)
    assert reply.status_code == 200
    hsts = reply.headers["Strict-Transport-Security"]
    assert int(hsts.split("max-age=")[1].split(";")[0]) >= 365 * 24 * 3600


def test_generated_certificate_names_the_host_and_its_key_is_private(hub):
    cert, key = Path(hub.runtime["tls_cert"]), Path(hub.runtime["tls_key"])
    assert cert.parent == hub.state_dir / "tls"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.parent.stat().st_mode) == 0o700
    assert tls.problems(cert, key, urlparse(hub.public_url).hostname) == []
    # The client sessions of these tests verify the hub against this certificate only.
    assert hub.session().verify == str(cert)
