"""Internal TLS (JupyterHub's internal_ssl): hub, proxy and project servers speak TLS to each
other and each checks the other's certificate, against a running hub and container."""

from __future__ import annotations

import pytest
import requests

from hdshub import naming
from tests.integration.test_network import try_connect

REFUSED = (requests.exceptions.SSLError, requests.exceptions.ConnectionError)


def server_address(docker_client, slug: str) -> str:
    container = docker_client.containers.get(naming.container_name(slug, "alice"))
    return container.attrs["NetworkSettings"]["Networks"][naming.network_name(slug)]["IPAddress"]


def stranger(hub) -> requests.Session:
    """Trusts the internal CAs, so it could check the certificates, but shows none."""
    session = requests.Session()
    session.trust_env = False
    session.verify = hub.internal_session().verify
    return session


def test_hub_api_answers_only_clients_with_an_internal_certificate(hub):
    api = f"https://{hub.runtime['hub_ip']}:{hub.hub_port}/hub/api/"
    assert hub.internal_session().get(api, timeout=10).status_code == 200
    with pytest.raises(REFUSED):
        stranger(hub).get(api, timeout=10)
    plain = requests.Session()
    plain.trust_env = False
    with pytest.raises(requests.exceptions.ConnectionError):
        plain.get(api.replace("https://", "http://"), timeout=10)


def test_a_project_server_is_tls_with_a_certificate_naming_its_address(hub, alice_server, docker_client):
    address = server_address(docker_client, alice_server.slug)
    status = f"https://{address}:8888/user/alice/{alice_server.slug}/api/status"
    # Verified against the internal CAs, host name included: the certificate names the
    # address the spawner gave the container before it started.
    reply = hub.internal_session().get(status, timeout=10)
    assert reply.status_code in (401, 403), reply.status_code  # TLS passed; no token, no entry
    with pytest.raises(REFUSED):
        stranger(hub).get(status, timeout=10)


def test_the_proxy_reaches_servers_over_tls(hub, alice_server, docker_client):
    token = (hub.state_dir / "proxy-auth-token.secret").read_text().strip()
    routes = hub.internal_session().get(f"https://127.0.0.1:{hub.proxy_api_port}/api/routes",
                                        headers={"Authorization": f"token {token}"}, timeout=10).json()
    target = routes[f"/user/alice/{alice_server.slug}"]["target"]
    assert target == f"https://{server_address(docker_client, alice_server.slug)}:8888"
    # And users still get through, the proxy presenting its own client certificate.
    alice = alice_server.as_user(hub, "alice")
    assert alice.get(f"{alice_server.url}/api/status", timeout=10).status_code == 200


def test_no_certificate_no_hub_even_from_a_project_network(hub, alice_server, docker_client):
    container = docker_client.containers.get(naming.container_name(alice_server.slug, "alice"))
    # The port is open to project servers (the control), but a client without a certificate
    # signed by an internal CA gets no further than the handshake.
    assert try_connect(container, hub.runtime["hub_ip"], hub.hub_port).startswith("CONNECTED")
    probe = ("import ssl, socket, sys\n"
             "ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n"
             "s = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2])), 5))\n"
             "s.sendall(b'GET /hub/api/ HTTP/1.1\\r\\nHost: hub\\r\\n\\r\\n')\n"
             "try:\n    print('ANSWERED' if s.recv(100) else 'CLOSED')\n"
             "except (ssl.SSLError, OSError) as e:\n    print('REFUSED', e)\n")
    output = container.exec_run(["python3", "-c", probe, hub.runtime["hub_ip"], str(hub.hub_port)],
                                user="1000").output.decode()
    assert output.startswith(("REFUSED", "CLOSED")), output
