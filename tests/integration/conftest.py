"""Fixtures for integration tests: real Docker, real images, a real hub and proxy."""

from __future__ import annotations

import http.server
import os
import secrets
import subprocess
import threading
import time

import docker
import docker.errors
import pytest
import requests

from hdshub.kits import load_kits
from tests.conftest import IN_CI, missing_prerequisite
from tests.support.hub import RunningHub, free_port

# Every test project of this session is `it<session>-<random>`: two test sessions on one
# Docker Engine (a developer's and a helper's) never remove each other's objects.
SESSION = secrets.token_hex(2)
SLUG_PREFIX = f"it{SESSION}-"
TEST_PREFIX = f"hds-{SLUG_PREFIX}"


def new_slug() -> str:
    return f"{SLUG_PREFIX}{secrets.token_hex(3)}"


def is_test_object(name: str, with_demo: bool) -> bool:
    if name.startswith(TEST_PREFIX) or (IN_CI and name.startswith("hds-it")):
        return True
    return with_demo and (name == "hds-demo" or name.startswith(("hds-demo-", "hds-demo.")))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = docker.from_env()
        client.ping()
    except Exception as error:  # no engine, no socket, no permission
        missing_prerequisite(f"a running Docker Engine ({error})")
    for kit in load_kits().values():
        try:
            client.images.get(kit.image_tag)
        except docker.errors.ImageNotFound:
            missing_prerequisite(f"image {kit.image_tag}: run 'hdshub images build'")
    return client


def remove_test_objects(client, with_demo: bool):
    for container in client.containers.list(all=True):
        if is_test_object(container.name, with_demo):
            container.remove(force=True)
    for volume in client.volumes.list():
        if is_test_object(volume.name, with_demo):
            volume.remove(force=True)
    for network in client.networks.list():
        if is_test_object(network.name, with_demo):
            network.remove()


#: A site tier small enough to reach its quotas in a test (tests/integration/test_quotas.py).
SMALL_TIER = "test-small"
SMALL_TIER_YAML = f"""tiers:
  {SMALL_TIER}:
    title: {{fr: Petit palier de test, en: Small test tier}}
    price: {{on_quote: true}}
    limits: {{cpu: 1.0, memory: 512M, pids: 256, kernels: 2}}
    quotas: {{servers: 1, storage: 30M, idle_timeout: 60s, max_age: 150s}}
"""


def site_config(folder):
    (folder / "tiers.yaml").write_text(SMALL_TIER_YAML, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def hub(docker_client, tmp_path_factory):
    """One hub for the session. It creates the demo project only on a machine with no demo
    of its own (always the case in CI), so a developer's running demo is never touched."""
    # In CI the machine is expendable: leftovers of a developer's demo are removed.
    demo_exists = not IN_CI and any(v.name.startswith("hds-demo-") for v in docker_client.volumes.list())
    remove_test_objects(docker_client, with_demo=IN_CI)
    remove_test_objects(docker_client, with_demo=False)
    # The usage service samples every second, so that a short workload is measured well
    # (tests/integration/test_usage.py); production samples every minute.
    os.environ.setdefault("HDSHUB_USAGE_EVERY", "1")
    running = RunningHub(
        state_dir=tmp_path_factory.mktemp("hub-state"),
        config_dir=site_config(tmp_path_factory.mktemp("hub-config")),
        public_url=f"https://127.0.0.1:{free_port()}",
        hub_port=free_port(), proxy_api_port=free_port(),
        with_demo=not demo_exists,
    )
    running.start()
    yield running
    running.stop()
    # Give DockerSpawner's auto-remove a moment, then remove whatever is left.
    time.sleep(1)
    remove_test_objects(docker_client, with_demo=not demo_exists)


@pytest.fixture
def new_project(hub, docker_client, request):
    """Factory: a fresh project (see new_slug) with the given members {user: role}."""
    created = []

    def make(members: dict[str, str], tier: str = "public", kit: str = "python-stats") -> str:
        slug = new_slug()
        hub.cli("project", "create", slug, "--tier", tier, "--kit", kit, "--title", f"Test {slug}")
        for user, role in members.items():
            if hub.api.get_user(user) is None:
                hub.add_user(user)
            hub.cli("project", "add-member", slug, user, "--role", role)
        created.append(slug)
        return slug

    yield make
    failed = getattr(request.node, "rep_call", None) and request.node.rep_call.failed
    for slug in created:
        for container in docker_client.containers.list(all=True, filters={"label": f"org.hdshub.project={slug}"}):
            if failed:
                print(f"\n--- logs of {container.name} ---\n{container.logs(tail=80).decode(errors='replace')}")
    if failed:
        print(f"\n--- hub log ---\n{hub.hub_log(80)}")


def wait_ready(hub, session: requests.Session, user: str, server: str, timeout: float = 120) -> dict:
    """Poll the REST API until the named server is ready; read its state, not a status code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = session.get(f"{hub.public_url}/hub/api/users/{user}", timeout=30).json()
        state = model.get("servers", {}).get(server)
        if state and state.get("ready"):
            return state
        if state is not None and not state.get("pending") and not state.get("ready"):
            raise AssertionError(f"server {user}/{server} stopped while starting: {state}\n{hub.hub_log()}")
        time.sleep(0.25)
    raise AssertionError(f"server {user}/{server} not ready after {timeout}s\n{hub.hub_log()}")


def start_server(hub, session: requests.Session, user: str, server: str, **body) -> requests.Response:
    return session.post(f"{hub.public_url}/hub/api/users/{user}/servers/{server}", json=body or None, timeout=60)


def stop_server(hub, session: requests.Session, user: str, server: str) -> None:
    reply = session.delete(f"{hub.public_url}/hub/api/users/{user}/servers/{server}", timeout=60)
    assert reply.status_code in (202, 204), reply.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        model = session.get(f"{hub.public_url}/hub/api/users/{user}", timeout=30).json()
        if server not in model.get("servers", {}):
            return
        time.sleep(0.25)
    raise AssertionError(f"{user}/{server} did not stop")


#: Addresses outside every project network, made real on this host for the session (on one
#: end of a veth pair: sandboxes often lack the dummy driver): a documentation address
#: standing for the internet, and the cloud metadata one.
OUTSIDE_ADDRESSES = {"public": "198.51.100.7", "metadata": "169.254.169.254"}
CONNECT_PROBE = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.settimeout(3)
try:
    s.connect((host, port)); print("CONNECTED")
except OSError as e:
    print("REFUSED", type(e).__name__, e)
"""


@pytest.fixture(scope="session")
def outside_listeners(docker_client):
    """{name: (address, port)} of HTTP servers on addresses a project container must not
    reach. A control container on Docker's default bridge (no hdshub protection) reaches
    each of them first: a refusal seen from a project container then proves the setup
    refuses, not that nothing was listening."""
    link, peer = f"hdsout{SESSION}", f"hdspeer{SESSION}"
    try:
        subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", peer],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        missing_prerequisite(f"a veth pair for outside addresses (root, iproute2): {error}")
    servers = []
    try:
        for end in (link, peer):
            subprocess.run(["ip", "link", "set", end, "up"], check=True)
        for address in OUTSIDE_ADDRESSES.values():
            subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", link], check=True)
        listeners = {}
        for name, address in OUTSIDE_ADDRESSES.items():
            server = http.server.HTTPServer((address, 0), http.server.SimpleHTTPRequestHandler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            listeners[name] = (address, server.server_address[1])
        image = next(iter(load_kits().values())).image_tag
        for name, (address, port) in listeners.items():
            seen = docker_client.containers.run(
                image, ["python3", "-c", CONNECT_PROBE, address, str(port)], network="bridge",
                user="1000", remove=True).decode().strip()
            assert seen == "CONNECTED", f"control container could not reach {name} {address}:{port}: {seen}"
        yield listeners
    finally:
        for server in servers:
            server.shutdown()
        subprocess.run(["ip", "link", "del", link], capture_output=True)
