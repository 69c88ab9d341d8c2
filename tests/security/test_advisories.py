"""Regression tests for the published advisories of JupyterHub, jupyter-server and Voilà,
replayed against hdshub's own hub: each attack must fail here, whatever the versions."""

from __future__ import annotations

import secrets
import time
from urllib.parse import quote, urljoin, urlparse

import pytest

from hdshub import configurer, naming

from .conftest import start_server

pytestmark = pytest.mark.docker


def off_site(hub, location: str) -> bool:
    """Whether a browser following this Location would leave the hub's origin.

    Browsers read a backslash as a slash in http(s) URLs: '/\\evil' is '//evil'."""
    target = urlparse(urljoin(f"{hub.public_url}/hub/login", location.replace("\\", "/")))
    return (target.scheme, target.netloc) != ("https", urlparse(hub.public_url).netloc)


def open_redirect_targets(hub) -> list[str]:
    host = urlparse(hub.public_url).netloc
    return [
        "//evil.example", "///evil.example", "////evil.example", "\\\\evil.example",
        "/\\evil.example", "\\/evil.example", "https://evil.example/", f"https://{host}//evil.example",
        f"https://{host}@evil.example/", "https:evil.example", "/%2f%2fevil.example",
        "javascript:alert(1)", " //evil.example",
    ]


def test_login_next_never_redirects_off_site(hub, alice_server):
    password = alice_server.passwords["alice"]
    browser = hub.login("alice", password)
    for target in open_redirect_targets(hub):
        # Already logged in: /hub/login redirects straight to `next`...
        reply = browser.get(f"{hub.public_url}/hub/login?next={quote(target, safe='')}",
                            allow_redirects=False, timeout=10)
        assert reply.status_code == 302, (target, reply.status_code)
        assert not off_site(hub, reply.headers["Location"]), (target, reply.headers["Location"])
    for target in open_redirect_targets(hub)[:8]:
        # ...and so does a fresh login form.
        fresh = hub.session()
        fresh.get(f"{hub.public_url}/hub/login", timeout=10)
        reply = fresh.post(f"{hub.public_url}/hub/login?next={quote(target, safe='')}",
                           data={"username": "alice", "password": password, "_xsrf": fresh.cookies["_xsrf"]},
                           allow_redirects=False, timeout=30)
        assert reply.status_code == 302, (target, reply.status_code)
        assert not off_site(hub, reply.headers["Location"]), (target, reply.headers["Location"])


def test_next_is_escaped_in_pages(hub, alice_server):
    payload = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>"
    anonymous = hub.session()
    browser = hub.login("alice", alice_server.passwords["alice"])
    for session, path in ((anonymous, "login"), (browser, "home"), (browser, "token"),
                          (anonymous, "no-such-page")):
        page = session.get(f"{hub.public_url}/hub/{path}?next={quote(payload, safe='')}", timeout=10).text
        assert "<script>alert(1)" not in page and "onerror=alert" not in page, path
    page = anonymous.get(f"{hub.public_url}/hub/login?next={quote('javascript:alert(1)', safe='')}", timeout=10).text
    assert 'href="javascript:' not in page and 'action="javascript:' not in page


def test_cookie_authenticated_posts_need_the_xsrf_token(hub, alice_server):
    browser = hub.login("alice", alice_server.passwords["alice"])
    token_api = f"{hub.public_url}/hub/api/users/alice/tokens"
    for extra in ({}, {"Sec-Fetch-Mode": "no-cors"}, {"Sec-Fetch-Mode": "navigate"},
                  {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}):
        reply = browser.post(token_api, json={"note": "xsrf"}, headers=extra, timeout=10)
        assert reply.status_code == 403, (extra, reply.status_code, reply.text[:200])
    # A form of the hub itself, without the token a page of the hub would carry.
    reply = browser.post(f"{hub.public_url}/hub/spawn/alice/{alice_server.slug}", data={},
                         headers={"Sec-Fetch-Mode": "no-cors"}, allow_redirects=False, timeout=10)
    assert reply.status_code == 403
    # On the project server: writing a file with the cookie alone is refused...
    assert browser.get(f"{alice_server.url}/lab", timeout=60).status_code == 200  # OAuth into the server
    target = f"{alice_server.url}/api/contents/work/xsrf-{secrets.token_hex(3)}.txt"
    body = {"type": "file", "format": "text", "content": "x"}
    for extra in ({}, {"Sec-Fetch-Mode": "no-cors"}):
        assert browser.put(target, json=body, headers=extra, timeout=30).status_code == 403, extra
    # ...and works with the server's _xsrf token, as JupyterLab sends it.
    xsrf = next(c.value for c in browser.cookies if c.name == "_xsrf" and c.path.startswith("/user/"))
    assert browser.put(target, json=body, headers={"X-XSRFToken": xsrf}, timeout=30).status_code == 201
    browser.delete(target, headers={"X-XSRFToken": xsrf}, timeout=30)


def test_a_one_megabyte_username_is_refused_cleanly(hub, alice_server):
    browser = hub.session()
    browser.get(f"{hub.public_url}/hub/login", timeout=10)
    started = time.monotonic()
    reply = browser.post(f"{hub.public_url}/hub/login",
                         data={"username": "a" * 2**20, "password": "x" * 20, "_xsrf": browser.cookies["_xsrf"]},
                         allow_redirects=False, timeout=60)
    assert reply.status_code == 403 and "Invalid username or password" in reply.text
    assert time.monotonic() - started < 10
    assert len(reply.content) < 2**16  # not echoed back whole
    assert "__Host-jupyterhub-hub-login" not in browser.cookies
    assert hub.session().get(f"{hub.public_url}/hub/login", timeout=10).status_code == 200
    assert not any(len(u["name"]) > 64 for u in hub.api.request("GET", "/users?limit=200"))


def test_spawn_form_cannot_choose_an_image(hub, alice_server, docker_client):
    """The spawn page's form (opt- fields), not only the REST API's user_options."""
    slug = alice_server.slug + "x"
    hub.cli("project", "create", slug, "--tier", "public", "--kit", "python-stats", "--title", slug)
    hub.cli("project", "add-member", slug, "alice", "--role", "analyst")
    browser = hub.login("alice", alice_server.passwords["alice"])
    # (No GET of the spawn page first: without an options form, a GET starts the server.)
    xsrf = next(c.value for c in browser.cookies if c.name == "_xsrf" and c.path == "/hub/")
    reply = browser.post(f"{hub.public_url}/hub/spawn/alice/{slug}",
                         data={"_xsrf": xsrf, "image": "hdshub/rootfs:latest", "opt-image": "hdshub/rootfs:latest"},
                         timeout=60)
    assert reply.status_code == 400, (reply.status_code, reply.text[:300])
    assert "Start options are not accepted" in reply.text
    assert not docker_client.containers.list(all=True, filters={"name": naming.container_name(slug, "alice")})


def test_voila_static_path_traversal(hub, alice_server, docker_client):
    found = docker_client.containers.run(
        "hdshub/python-stats:latest", ["python3", "-c", "import importlib.util as u; print(bool(u.find_spec('voila')))"],
        remove=True, network_mode="none", entrypoint=[],
    ).decode().strip()
    if found != "True":
        pytest.skip("Voilà is in no kit image yet (dashboards are still to come): no /voila/static/ to attack")
    browser = hub.login("alice", alice_server.passwords["alice"])
    for path in ("voila/static/..%2f..%2f..%2f..%2fetc%2fpasswd", "voila/static/../../../../etc/passwd",
                 "voila/templates/..%2f..%2f..%2f..%2fetc%2fpasswd"):
        reply = browser.get(f"{alice_server.url}/{path}", timeout=30)
        assert "root:x:0:0" not in reply.text, path


def test_users_cannot_reach_each_other(hub, alice_server):
    bob = alice_server.as_user(hub, "bob")  # a member of the same project
    api = f"{hub.public_url}/hub/api"
    assert bob.get(f"{alice_server.url}/api/status", timeout=30).status_code == 403
    assert bob.get(f"{alice_server.url}/api/contents", timeout=30).status_code == 403
    assert bob.get(f"{api}/users/alice", timeout=10).status_code in (403, 404)
    assert bob.post(f"{api}/users/alice/tokens", json={}, timeout=10).status_code in (403, 404)
    assert bob.delete(f"{api}/users/alice/servers/{alice_server.slug}", timeout=10).status_code in (403, 404)
    assert start_server(hub, bob, "alice", alice_server.slug).status_code in (403, 404)
    assert bob.post(f"{api}/shares/alice/{alice_server.slug}", json={"user": "bob"},
                    timeout=10).status_code in (403, 404)
    # bob logged in with a browser: the hub does not hand him an OAuth token for her server.
    browser = hub.login("bob", alice_server.passwords["bob"])
    reply = browser.get(f"{alice_server.url}/lab", timeout=30)
    assert reply.status_code == 403 and urlparse(reply.url).path.startswith("/hub/")
    # (Only the state cookie of the refused OAuth attempt, no access cookie.)
    assert f"__Host-jupyterhub-user-alice-{alice_server.slug}" not in browser.cookies


def test_logout_in_one_tab_ends_the_server_session_of_the_other(hub, alice_server):
    """Two tabs share one browser: one works in the server, the other logs out."""
    browser = hub.login("alice", alice_server.passwords["alice"])
    assert browser.get(f"{alice_server.url}/lab", timeout=60).status_code == 200
    assert browser.get(f"{alice_server.url}/api/status", timeout=30).status_code == 200
    other_browser = hub.login("alice", alice_server.passwords["alice"])  # another device
    assert other_browser.get(f"{alice_server.url}/lab", timeout=60).status_code == 200
    assert browser.get(f"{hub.public_url}/hub/logout", timeout=30).status_code == 200
    assert "__Host-jupyterhub-hub-login" not in browser.cookies
    # The server tab's cookie is still in the browser, but its token was revoked: the server
    # stops accepting it once its short token cache expires.
    deadline = time.monotonic() + configurer.SERVER_TOKEN_CACHE_SECONDS + 20
    while True:
        reply = browser.get(f"{alice_server.url}/api/status", allow_redirects=False, timeout=30)
        if reply.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert reply.status_code in (302, 403), reply.status_code
    # Following the redirect leads to the login page: nothing logs the tab back in silently.
    reply = browser.get(f"{alice_server.url}/lab", timeout=30)
    assert urlparse(reply.url).path == "/hub/login", reply.url
    # A logout ends that browser's session only.
    assert other_browser.get(f"{alice_server.url}/api/status", timeout=30).status_code == 200



def test_hub_operators_manage_but_never_enter_users_servers(hub, alice_server):
    """The local administrator holds hdshub-operator, not JupyterHub's admin role."""
    operator = hub.as_user(hub.user_token("admin"))
    api = f"{hub.public_url}/hub/api"
    model = operator.get(f"{api}/users/admin", timeout=10).json()
    assert model["admin"] is False and "hdshub-operator" in model["roles"], model
    users = operator.get(f"{api}/users", timeout=10)
    assert users.status_code == 200 and "alice" in [u["name"] for u in users.json()]
    alice = operator.get(f"{api}/users/alice", timeout=10).json()
    assert alice_server.slug in alice["servers"]  # sees it, may stop it (admin:servers)...
    assert operator.get(f"{alice_server.url}/api/status", timeout=30).status_code == 403  # ...never enters
    assert operator.get(f"{alice_server.url}/api/contents/work", timeout=30).status_code == 403
    assert operator.post(f"{api}/users/alice/tokens", json={}, timeout=10).status_code == 403
    browser = hub.login("admin", hub.admin_password)
    reply = browser.get(f"{alice_server.url}/lab", timeout=30)
    assert reply.status_code == 403, reply.status_code
