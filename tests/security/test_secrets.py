"""The hub's secrets stay with the hub: private files, never in a container's environment,
and the proxy's API (which can reroute every URL) answers the hub alone."""

from __future__ import annotations

import os
import stat

import pytest
import requests

from hdshub import naming
from hdshub.hardening import leaked_secrets
from tests.integration.test_network import try_connect

pytestmark = pytest.mark.docker


def hub_secrets(hub) -> dict[str, str]:
    state = hub.state_dir
    return {
        "proxy token": (state / "proxy-auth-token.secret").read_text().strip(),
        "CLI token": (state / "cli-api-token.secret").read_text().strip(),
        "auth_state key": (state / "auth-state-crypt-key.secret").read_text().strip(),
        "cookie secret": (state / "jupyterhub_cookie_secret").read_text().strip(),
        "TLS key": (state / "tls" / "key.pem").read_text().strip(),
    }


def test_state_directory_is_private(hub):
    assert stat.S_IMODE(os.stat(hub.state_dir).st_mode) == 0o700
    for directory, _dirs, files in os.walk(hub.state_dir):
        if "/policies" in directory:
            # Read by project containers through a read-only mount; nobody but root writes.
            for path in [directory, *(os.path.join(directory, f) for f in files)]:
                assert stat.S_IMODE(os.stat(path).st_mode) & 0o022 == 0, path
            continue
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory
        for name in files:
            path = os.path.join(directory, name)
            if directory.endswith("logs"):
                continue  # logs hold no secret; the directory above them is private anyway
            assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, f"{path} is readable by others"


def test_no_hub_secret_in_a_project_container(hub, alice_server, docker_client):
    attrs = docker_client.containers.get(naming.container_name(alice_server.slug, "alice")).attrs
    assert leaked_secrets(attrs, hub_secrets(hub)) == []
    names = {entry.split("=", 1)[0] for entry in attrs["Config"]["Env"]}
    assert not names & {"JUPYTERHUB_CRYPT_KEY", "CONFIGPROXY_AUTH_TOKEN", "HDSHUB_STATE_DIR"}
    # What a kernel sees is the container's environment (it inherits the server's).
    output = docker_client.containers.get(naming.container_name(alice_server.slug, "alice")).exec_run(
        ["sh", "-c", "cat /proc/1/environ /proc/self/environ | tr '\\0' '\\n'"], user="1000").output.decode()
    assert not any(value in output for value in hub_secrets(hub).values())


def test_proxy_api_needs_its_token(hub):
    api = f"https://127.0.0.1:{hub.proxy_api_port}/api/routes"
    # Without the hub's internal certificate the proxy API does not even finish the handshake.
    stranger = requests.Session()
    stranger.trust_env = False
    stranger.verify = hub.internal_session().verify
    with pytest.raises(requests.exceptions.SSLError):
        stranger.get(api, timeout=10)
    direct = hub.internal_session()
    assert direct.get(api, timeout=10).status_code == 403
    assert direct.get(api, headers={"Authorization": "token wrong"}, timeout=10).status_code == 403
    token = hub_secrets(hub)["proxy token"]
    assert direct.get(api, headers={"Authorization": f"token {token}"}, timeout=10).status_code == 200


def test_proxy_api_is_unreachable_from_a_project_container(hub, alice_server, docker_client):
    container = docker_client.containers.get(naming.container_name(alice_server.slug, "alice"))
    network = docker_client.networks.get(naming.network_name(alice_server.slug)).attrs
    gateway = network["IPAM"]["Config"][0]["Gateway"]
    # The control: the hub API is reachable from here, so the probe itself works.
    assert try_connect(container, hub.runtime["hub_ip"], hub.hub_port).startswith("CONNECTED")
    for address in (hub.runtime["hub_ip"], gateway):
        assert try_connect(container, address, hub.proxy_api_port).startswith("REFUSED"), address
