"""The audit trail through a real hub: what the hub records, who may send events, and
`hdshub audit verify` catching a changed line."""

from __future__ import annotations

import json
import re
import secrets
import time

import pytest
import requests

from hdshub import naming

from .conftest import start_server, stop_server, wait_ready

pytestmark = pytest.mark.docker

# Run inside a project container: POST one event to the hub API as the guard would.
POST_FROM_CONTAINER = """
import json, os, ssl, sys, urllib.request, urllib.error
body = json.dumps({"events": [
    {"action": "contents-read", "target": "data/cohorte.csv", "outcome": "refused",
     "user": sys.argv[1], "details": {"client_ip": "203.0.113.7", "reason": "raw-data"}},
    {"action": "execute", "target": "kernel/k1", "outcome": "ok", "user": "Not A User!",
     "details": {"code": "print(1)\\nprint(2)"}},
]}).encode()
request = urllib.request.Request(os.environ["JUPYTERHUB_API_URL"] + "/hdshub/audit/events", body,
    {"Authorization": "token " + os.environ["TOKEN"], "Content-Type": "application/json",
     "X-Real-Ip": "10.9.9.9", "X-Forwarded-For": "10.9.9.9"})
# The hub API speaks internal TLS and checks the client's certificate: the server's own.
tls = ssl.create_default_context(cafile=os.environ["JUPYTERHUB_SSL_CLIENT_CA"])
tls.load_cert_chain(os.environ["JUPYTERHUB_SSL_CERTFILE"], os.environ["JUPYTERHUB_SSL_KEYFILE"])
try:
    reply = urllib.request.urlopen(request, timeout=20, context=tls)
except urllib.error.HTTPError as error:
    reply = error
print(reply.status, reply.read().decode())
"""


def new_username() -> str:
    return f"aud{secrets.token_hex(3)}"


def trail(hub, stream: str) -> list[dict]:
    path = hub.state_dir / "audit" / f"{stream}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_event(hub, stream: str, timeout: float = 90, **fields) -> dict:
    """The first event of `stream` whose fields (and `details` entries) match, waiting for it:
    the hub writes its own events from a thread, just after the fact."""
    details = fields.pop("details", {})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in trail(hub, stream):
            if all(event.get(k) == v for k, v in fields.items()) and \
                    all(event.get("details", {}).get(k) == v for k, v in details.items()):
                return event
        time.sleep(0.2)
    raise AssertionError(f"no event {fields} {details} in {stream}: {trail(hub, stream)[-10:]}")


def form_login(hub, name: str, password: str) -> requests.Response:
    session = hub.session()
    page = session.get(f"{hub.public_url}/hub/login", timeout=10)
    xsrf = session.cookies.get("_xsrf") or re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    # Headers a client could send to pass for someone else: the trail must not believe them.
    return session.post(f"{hub.public_url}/hub/login", timeout=30, allow_redirects=False,
                        data={"username": name, "password": password, "_xsrf": xsrf},
                        headers={"X-Real-Ip": "198.51.100.1", "X-Forwarded-For": "198.51.100.2"})


def test_logins_refused_and_accepted_and_logouts_are_in_the_hub_trail(hub):
    name = new_username()
    password = hub.add_user(name)
    assert form_login(hub, name, "not-the-password").status_code == 403
    refused = wait_for_event(hub, "_hub", action="login", user=name, outcome="refused")
    assert refused["source_ip"] == "127.0.0.1" and refused["project"] == ""

    session = hub.login(name, password)
    accepted = wait_for_event(hub, "_hub", action="login", user=name, outcome="ok")
    assert accepted["source_ip"] == "127.0.0.1"
    assert accepted["seq"] > refused["seq"]

    session.get(f"{hub.public_url}/hub/logout", timeout=10)
    logout = wait_for_event(hub, "_hub", action="logout", user=name, outcome="ok")
    assert logout["source_ip"] == "127.0.0.1"


@pytest.fixture
def running_server(hub, new_project, docker_client):
    """A member's running server: (slug, user, the container, its own API token)."""
    user = new_username()
    slug = new_project({user: "analyst"})
    session = hub.as_user(hub.user_token(user))
    assert start_server(hub, session, user, slug).status_code in (201, 202)
    wait_ready(hub, session, user, slug)
    container = docker_client.containers.get(naming.container_name(slug, user))
    env = dict(line.split("=", 1) for line in container.attrs["Config"]["Env"])
    yield slug, user, container, env["JUPYTERHUB_API_TOKEN"]
    if slug in hub.api.get_user(user)["servers"]:
        stop_server(hub, session, user, slug)


def test_server_start_and_stop_are_in_the_project_trail(hub, new_project, running_server):
    slug, user, container, _token = running_server
    started = wait_for_event(hub, slug, action="server-start", outcome="ok")
    assert started["user"] == user and started["project"] == slug
    assert started["details"]["image"] == "hdshub/python-stats:latest"
    assert started["details"]["server"] == f"{user}/{slug}"
    # The guard in the container delivers its own events to the same trail.
    wait_for_event(hub, slug, action="guard-start", user=user, details={"server": f"{user}/{slug}"})

    stop_server(hub, hub.as_user(hub.user_token(user)), user, slug)
    wait_for_event(hub, slug, action="server-stop", outcome="ok", details={"owner": user})


def test_a_refused_start_is_recorded_with_its_reason(hub, new_project):
    outsider = new_username()
    hub.add_user(outsider)
    slug = new_project({new_username(): "analyst"})
    session = hub.as_user(hub.user_token(outsider))
    assert start_server(hub, session, outsider, slug).status_code >= 400
    refused = wait_for_event(hub, slug, action="server-start", user=outsider, outcome="refused")
    assert "not a member" in refused["details"]["reason"]


def test_events_not_sent_by_the_server_itself_are_refused(hub, running_server):
    slug, user, container, server_token = running_server
    direct = f"https://{hub.runtime['hub_ip']}:{hub.runtime['hub_port']}/hub/api/hdshub/audit/events"
    body = {"events": [{"action": "contents-read", "target": "forged", "outcome": "ok"}]}
    for url, token in [
        (direct, server_token),                 # the right token, from the host's address
        (direct, hub.user_token(user)),         # the owner's own token, from the host
        (f"{hub.public_url}/hub/api/hdshub/audit/events", server_token),  # through the proxy
    ]:
        session = hub.internal_session() if url == direct else hub.session()
        reply = session.post(url, json=body, headers={"Authorization": f"token {token}",
                                                      "X-Real-Ip": _container_ip(container, slug)},
                             timeout=10)
        assert reply.status_code == 403, (url, reply.status_code, reply.text)
        assert "Only a running project server" in reply.json()["message"]
    assert not any(e["target"] == "forged" for e in trail(hub, slug))
    # From the server's own address, but with the owner's personal token (pasted in a kernel).
    output = container.exec_run(["python3", "-c", POST_FROM_CONTAINER, user], user="1000",
                                environment={"TOKEN": hub.user_token(user)}).output.decode()
    assert output.startswith("403 "), output


def _container_ip(container, slug: str) -> str:
    return container.attrs["NetworkSettings"]["Networks"][naming.network_name(slug)]["IPAddress"]


def test_events_from_inside_the_container_are_attributed_by_the_hub(hub, running_server):
    slug, user, container, server_token = running_server
    result = container.exec_run(["python3", "-c", POST_FROM_CONTAINER, user], user="1000",
                                environment={"TOKEN": server_token})
    output = result.output.decode()
    assert output.startswith("201 "), output
    assert json.loads(output[4:]) == {"written": 2}

    read = wait_for_event(hub, slug, action="contents-read", target="data/cohorte.csv")
    assert (read["user"], read["project"], read["outcome"]) == (user, slug, "refused")
    assert read["source_ip"] == "203.0.113.7"
    assert read["details"]["server"] == f"{user}/{slug}"
    assert read["details"]["server_ip"] == _container_ip(container, slug)
    executed = wait_for_event(hub, slug, action="execute", target="kernel/k1")
    assert executed["user"] == user  # not a username: the server's owner
    assert executed["details"]["code"] == "print(1)\nprint(2)"

    # A bad batch is refused whole, in both languages, and nothing of it is written.
    bad = POST_FROM_CONTAINER.replace('"contents-read"', '"format-disk"')
    output = container.exec_run(["python3", "-c", bad, user], user="1000",
                                environment={"TOKEN": server_token}).output.decode()
    assert output.startswith("400 "), output
    message = json.loads(output[4:])["message"]
    assert message.startswith("Événements d'audit refusés") and "Audit events refused" in message
    assert "action 'format-disk' not accepted" in message


def test_a_server_still_delivers_after_a_hub_restart(hub, running_server):
    """The restarted hub kept no copy of the server's token: it reads it back from the container."""
    slug, user, container, server_token = running_server
    hub.restart()
    output = container.exec_run(["python3", "-c", POST_FROM_CONTAINER, user], user="1000",
                                environment={"TOKEN": server_token}).output.decode()
    assert output.startswith("201 "), output
    stop_server(hub, hub.as_user(hub.user_token(user)), user, slug)
    wait_for_event(hub, slug, action="server-stop", outcome="ok")
    assert hub.cli("audit", "verify", slug).returncode == 0


def test_verify_passes_then_catches_an_edited_line(hub, running_server):
    slug, user, _container, _token = running_server
    stop_server(hub, hub.as_user(hub.user_token(user)), user, slug)
    wait_for_event(hub, slug, action="server-stop")  # the last write to this trail
    verified = hub.cli("audit", "verify", slug)
    count = len(trail(hub, slug))
    assert verified.stdout.startswith(f"intact: {count} events"), verified.stdout

    exported = hub.cli("audit", "export", slug, "--from", "2000-01-01", "--to", "2100-01-01",
                       "--format", "json").stdout
    assert len(json.loads(exported)) == count

    path = hub.state_dir / "audit" / f"{slug}.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace('"outcome":"ok"', '"outcome":"refused"', 1)
    path.write_text("".join(lines))
    broken = hub.cli("audit", "verify", slug, check=False)
    assert broken.returncode == 1
    assert f"{slug}: line 1: edited" in broken.stderr, broken.stderr
