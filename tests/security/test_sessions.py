"""Cookies and tokens: host-prefixed https-only cookies, short logins, tokens that expire,
and no token in a URL ever authenticating a request."""

from __future__ import annotations

import datetime
import time

import pytest

from hdshub import configurer

pytestmark = pytest.mark.docker


def set_cookies(reply) -> list[str]:
    """Every Set-Cookie header along a chain of redirects."""
    return [value for r in (*reply.history, reply) for value in r.raw.headers.getlist("Set-Cookie")]


def test_login_cookie_is_host_prefixed_https_only_and_short_lived(hub, alice_server):
    browser = hub.session()
    page = browser.get(f"{hub.public_url}/hub/login", timeout=10)
    before = time.time()
    reply = browser.post(
        f"{hub.public_url}/hub/login",
        data={"username": "alice", "password": alice_server.passwords["alice"],
              "_xsrf": browser.cookies["_xsrf"]},
        timeout=30,
    )
    assert reply.status_code == 200 and reply.url.endswith("/hub/home"), page.text[:300]
    headers = set_cookies(reply)
    assert headers and all("; Secure" in h for h in headers), headers
    (login,) = [c for c in browser.cookies if c.name.endswith("jupyterhub-hub-login")]
    assert login.name == "__Host-jupyterhub-hub-login"
    assert login.secure and login.path == "/" and not login.domain_specified
    assert login.has_nonstandard_attr("HttpOnly")
    max_age = configurer.COOKIE_MAX_AGE_DAYS * 24 * 3600
    assert before + max_age - 60 <= login.expires <= before + max_age + 60


def test_server_cookie_is_host_prefixed_too(hub, alice_server):
    browser = hub.login("alice", alice_server.passwords["alice"])
    reply = browser.get(f"{alice_server.url}/lab", timeout=60)  # OAuth with the hub, then the page
    assert reply.status_code == 200 and reply.url == f"{alice_server.url}/lab"
    (cookie,) = [c for c in browser.cookies if "jupyterhub-user-alice" in c.name]
    assert cookie.name == f"__Host-jupyterhub-user-alice-{alice_server.slug}"
    assert cookie.secure and cookie.path == "/" and cookie.has_nonstandard_attr("HttpOnly")


def test_api_tokens_have_a_maximum_lifetime(hub, alice_server):
    alice = alice_server.as_user(hub, "alice")
    tokens = f"{hub.public_url}/hub/api/users/alice/tokens"
    too_long = alice.post(tokens, json={"expires_in": configurer.TOKEN_MAX_SECONDS + 1}, timeout=10)
    assert too_long.status_code == 400 and "must not exceed" in too_long.json()["message"]
    # A token asked for without an expiry gets the maximum, not "never".
    reply = alice.post(tokens, json={"note": "no expiry asked"}, timeout=10)
    assert reply.status_code == 201, reply.text
    expires = datetime.datetime.fromisoformat(reply.json()["expires_at"].replace("Z", "+00:00"))
    lifetime = expires - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(seconds=configurer.TOKEN_MAX_SECONDS - 120) < lifetime
    assert lifetime <= datetime.timedelta(seconds=configurer.TOKEN_MAX_SECONDS)


def test_a_revoked_token_stops_working_on_the_server_within_seconds(hub, alice_server):
    made = hub.api.request("POST", "/users/alice/tokens", json={"note": "revoked", "expires_in": 600})
    alice = hub.as_user(made["token"])
    assert alice.get(f"{alice_server.url}/api/status", timeout=30).status_code == 200  # now cached
    hub.api.request("DELETE", f"/users/alice/tokens/{made['id']}")
    revoked = sent = time.monotonic()
    # Judged by when each request was sent: a slow reply to an early one is no failure.
    while alice.get(f"{alice_server.url}/api/status", timeout=30).status_code == 200:
        assert sent - revoked < configurer.SERVER_TOKEN_CACHE_SECONDS + 5, \
            "the server still accepts a revoked token"
        time.sleep(0.5)
        sent = time.monotonic()


def test_a_token_in_the_url_authenticates_nothing(hub, alice_server):
    token = alice_server.tokens["alice"]
    anonymous = hub.session()
    # The hub API: only the Authorization header counts.
    assert anonymous.get(f"{hub.public_url}/hub/api/user?token={token}", timeout=10).status_code == 403
    assert hub.as_user(token).get(f"{hub.public_url}/hub/api/user", timeout=10).status_code == 200
    # The project server: same rule, for its API and its pages.
    for path in ("api/status", "api/contents", "lab"):
        reply = anonymous.get(f"{alice_server.url}/{path}?token={token}", timeout=30, allow_redirects=False)
        assert reply.status_code in (302, 403), (path, reply.status_code)
        if reply.status_code == 302:  # to the hub's login, never into the server
            assert "/hub/" in reply.headers["Location"], reply.headers["Location"]
    assert hub.as_user(token).get(f"{alice_server.url}/api/status", timeout=30).status_code == 200
