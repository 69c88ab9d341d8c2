"""From inside a project container: the hub API answers, nothing else does.

Every address tried here is one a correct setup refuses: a documentation address and the
link-local metadata address, each with a real listener on this host that an unprotected
container does reach, the host's own addresses, and containers of other
projects or other members created by these tests.
"""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from hdshub import naming

from .conftest import CONNECT_PROBE as PROBE, OUTSIDE_ADDRESSES, start_server, stop_server, new_slug, wait_ready

pytestmark = pytest.mark.docker


def try_connect(container, host: str, port: int) -> str:
    result = container.exec_run(["python3", "-c", PROBE, host, str(port)], user="1000")
    return result.output.decode().strip()


@pytest.fixture(scope="module")
def host_listener():
    """A server on every host interface: a kernel must still not reach it."""
    server = http.server.HTTPServer(("0.0.0.0", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def two_projects(hub, docker_client):
    """Project A with alice and bob, project B with dave; all three servers running."""
    a, b = new_slug(), new_slug()
    for slug in (a, b):
        hub.cli("project", "create", slug, "--tier", "public", "--kit", "python-stats", "--title", slug)
    for user, slug in (("alice", a), ("bob", a), ("dave", b)):
        if hub.api.get_user(user) is None:
            hub.add_user(user)
        hub.cli("project", "add-member", slug, user, "--role", "analyst")
    sessions = {}
    for user, slug in (("alice", a), ("bob", a), ("dave", b)):
        sessions[user] = hub.as_user(hub.user_token(user))
        assert start_server(hub, sessions[user], user, slug).status_code in (201, 202)
    for user, slug in (("alice", a), ("bob", a), ("dave", b)):
        wait_ready(hub, sessions[user], user, slug)
    containers = {
        user: docker_client.containers.get(naming.container_name(slug, user))
        for user, slug in (("alice", a), ("bob", a), ("dave", b))
    }
    yield a, b, containers
    for user, slug in (("alice", a), ("bob", a), ("dave", b)):
        stop_server(hub, sessions[user], user, slug)


def ip_of(container, network):
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def gateway_of(docker_client, network):
    return docker_client.networks.get(network).attrs["IPAM"]["Config"][0]["Gateway"]


def test_hub_api_is_reachable(hub, two_projects):
    _, _, containers = two_projects
    runtime = hub.runtime
    assert try_connect(containers["alice"], runtime["hub_ip"], runtime["hub_port"]) == "CONNECTED"


@pytest.mark.parametrize("name", sorted(OUTSIDE_ADDRESSES))
def test_outside_addresses_are_unreachable(two_projects, outside_listeners, name):
    """Listeners a container without hdshub's protections reaches (outside_listeners)."""
    _, _, containers = two_projects
    address, port = outside_listeners[name]
    assert try_connect(containers["alice"], address, port).startswith("REFUSED")



def test_host_ports_are_unreachable(hub, two_projects, docker_client, host_listener):
    a, _, containers = two_projects
    # Sanity: the listener is really up on the host.
    with socket.create_connection(("127.0.0.1", host_listener), timeout=2):
        pass
    for address in {gateway_of(docker_client, naming.network_name(a)), hub.runtime["hub_ip"]}:
        assert try_connect(containers["alice"], address, host_listener).startswith("REFUSED"), address
    # The hub's proxy public port and proxy API are host ports too.
    proxy_port = int(hub.public_url.rsplit(":", 1)[1])
    gateway = gateway_of(docker_client, naming.network_name(a))
    for port in (proxy_port, hub.proxy_api_port, 22):
        assert try_connect(containers["alice"], gateway, port).startswith("REFUSED"), port


def test_other_projects_and_other_members_are_unreachable(two_projects):
    a, b, containers = two_projects
    dave_ip = ip_of(containers["dave"], naming.network_name(b))
    bob_ip = ip_of(containers["bob"], naming.network_name(a))
    assert try_connect(containers["alice"], dave_ip, 8888).startswith("REFUSED")
    assert try_connect(containers["alice"], bob_ip, 8888).startswith("REFUSED")


def test_outside_names_do_not_resolve(two_projects):
    _, _, containers = two_projects
    result = containers["alice"].exec_run(
        ["python3", "-c", "import socket\ntry:\n socket.getaddrinfo('example.org', 80); print('RESOLVED')\n"
         "except OSError as e: print('NO', e)"], user="1000")
    assert result.output.decode().startswith("NO")
