"""Content-Security-Policy: hub pages and servers are never framed; what a user's server
serves from files (/files, /nbconvert) runs sandboxed, in an origin of its own."""

from __future__ import annotations

import secrets

import pytest

pytestmark = pytest.mark.docker

HTML = "<html><body><script>document.title = document.cookie</script>hello</body></html>"
NOTEBOOK = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def directives(reply) -> dict[str, str]:
    policy = reply.headers.get("Content-Security-Policy", "")
    parts = (p.strip().split(None, 1) for p in policy.split(";") if p.strip())
    return {p[0]: (p[1] if len(p) > 1 else "") for p in parts}


def test_hub_pages_cannot_be_framed(hub, alice_server):
    anonymous = hub.session()
    browser = hub.login("alice", alice_server.passwords["alice"])
    replies = [
        anonymous.get(f"{hub.public_url}/hub/login", timeout=10),
        anonymous.get(f"{hub.public_url}/hub/no-such-page", timeout=10),  # error pages too
        browser.get(f"{hub.public_url}/hub/home", timeout=10),
        browser.get(f"{hub.public_url}/hub/token", timeout=10),
    ]
    for reply in replies:
        csp = directives(reply)
        assert csp.get("frame-ancestors") == "'none'", (reply.url, reply.headers)
        assert csp.get("object-src") == "'none'" and csp.get("base-uri") == "'self'"
        assert reply.headers["X-Content-Type-Options"] == "nosniff"


@pytest.fixture(scope="module")
def user_files(hub, alice_server):
    """An HTML page and a notebook in the project's work area, written through the API."""
    alice = alice_server.as_user(hub, "alice")
    name = f"work/csp-{secrets.token_hex(3)}"
    for path, body in ((f"{name}.html", {"type": "file", "format": "text", "content": HTML}),
                       (f"{name}.ipynb", {"type": "notebook", "content": NOTEBOOK})):
        reply = alice.put(f"{alice_server.url}/api/contents/{path}", json=body, timeout=30)
        assert reply.status_code in (200, 201), reply.text
    yield name
    for suffix in (".html", ".ipynb"):
        alice.delete(f"{alice_server.url}/api/contents/{name}{suffix}", timeout=30)


def test_server_pages_cannot_be_framed(hub, alice_server):
    browser = hub.login("alice", alice_server.passwords["alice"])
    reply = browser.get(f"{alice_server.url}/lab", timeout=60)
    assert reply.status_code == 200
    assert directives(reply).get("frame-ancestors") == "'none'"
    assert "sandbox" not in directives(reply)  # the application itself is not sandboxed
    assert reply.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.parametrize("route", ["files/{name}.html", "nbconvert/html/{name}.ipynb?download=false",
                                   "view/{name}.html"])
def test_user_served_html_is_never_served(hub, alice_server, user_files, route):
    """The guard refuses every route that would serve a user's file as a page (stronger than
    the sandbox jupyter-server would put on it); the refusal itself cannot be framed."""
    browser = hub.login("alice", alice_server.passwords["alice"])
    reply = browser.get(f"{alice_server.url}/{route.format(name=user_files)}", timeout=60)
    assert reply.status_code == 403, reply.text[:300]
    assert "<script" not in reply.text
    assert directives(reply).get("frame-ancestors") == "'none'"
