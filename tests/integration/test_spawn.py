"""ProjectSpawner through a real hub and proxy: who may start what, and how it is confined."""

from __future__ import annotations

import html

import pytest

from hdshub import naming
from hdshub.hardening import container_problems, network_problems
from hdshub.tiers import load_tiers

from .conftest import start_server, stop_server, wait_ready

pytestmark = pytest.mark.docker


@pytest.fixture
def alice_project(hub, new_project):
    slug = new_project({"alice": "analyst", "carla": "clinician"})
    session = hub.as_user(hub.user_token("alice"))
    return slug, session


def test_member_starts_a_named_server_reachable_through_the_proxy(hub, alice_project, docker_client):
    slug, alice = alice_project
    reply = start_server(hub, alice, "alice", slug)
    assert reply.status_code in (201, 202), reply.text
    wait_ready(hub, alice, "alice", slug)
    status = alice.get(f"{hub.public_url}/user/alice/{slug}/api/status", timeout=10)
    assert status.status_code == 200, status.text
    assert docker_client.containers.get(naming.container_name(slug, "alice")).status == "running"
    stop_server(hub, alice, "alice", slug)


def test_container_is_hardened_and_follows_the_tier(hub, alice_project, docker_client):
    slug, alice = alice_project
    assert start_server(hub, alice, "alice", slug).status_code in (201, 202)
    wait_ready(hub, alice, "alice", slug)
    attrs = docker_client.containers.get(naming.container_name(slug, "alice")).attrs
    # The same expectations as `hdshub doctor` on a production host (hdshub.hardening).
    assert container_problems(attrs, slug, load_tiers()["public"].limits) == []
    assert attrs["Config"]["Image"] == "hdshub/python-stats:latest"
    env = attrs["Config"]["Env"]
    assert "OMP_NUM_THREADS=1" in env  # ceil of the tier's 1.0 CPU
    assert "JUPYTERHUB_ALLOW_TOKEN_IN_URL=0" in env  # from the configuration, not overwritten

    assert network_problems(docker_client.networks.get(naming.network_name(slug)).attrs) == []

    # The running process is really uid 1000 with no capabilities.
    exec_ = docker_client.containers.get(naming.container_name(slug, "alice")).exec_run(
        ["sh", "-c", "id -u; grep CapEff /proc/self/status; touch /usr/x 2>&1; touch /home/jovyan/data/x 2>&1"]
    )
    output = exec_.output.decode()
    assert output.splitlines()[0] == "1000"
    assert "CapEff:\t0000000000000000" in output
    assert output.count("Read-only file system") == 2
    stop_server(hub, alice, "alice", slug)


def test_private_tier_gets_private_limits(hub, new_project, docker_client):
    slug = new_project({"bob": "statistician"}, tier="private")
    bob = hub.as_user(hub.user_token("bob"))
    assert start_server(hub, bob, "bob", slug).status_code in (201, 202)
    wait_ready(hub, bob, "bob", slug)
    host = docker_client.containers.get(naming.container_name(slug, "bob")).attrs["HostConfig"]
    tier = load_tiers()["private"].limits
    assert (host["Memory"], host["PidsLimit"]) == (tier.memory_bytes, tier.pids)
    assert host["CpuQuota"] / host["CpuPeriod"] == pytest.approx(tier.cpu)
    stop_server(hub, bob, "bob", slug)


@pytest.mark.parametrize(
    "options",
    [
        {"image": "hdshub/rootfs:latest"},
        {"mem_limit": "64G"},
        {"volumes": {"/var/run/docker.sock": "/var/run/docker.sock"}},
        {"network_name": "bridge"},
    ],
)
def test_user_options_cannot_choose_anything(hub, alice_project, docker_client, options):
    slug, alice = alice_project
    reply = start_server(hub, alice, "alice", slug, user_options=options)
    assert reply.status_code == 400, reply.text
    assert "Start options are not accepted" in reply.json()["message"]
    assert not docker_client.containers.list(all=True, filters={"name": naming.container_name(slug, "alice")})


def test_non_member_is_refused_with_a_clear_message(hub, alice_project, docker_client):
    slug, _ = alice_project
    if hub.api.get_user("mallory") is None:
        hub.add_user("mallory")
    mallory = hub.as_user(hub.user_token("mallory"))
    reply = start_server(hub, mallory, "mallory", slug)
    assert reply.status_code == 403, reply.text
    message = reply.json()["message"]
    assert f"You are not a member of project {slug}" in message
    assert f"Vous n'êtes pas membre du projet {slug}" in message
    assert not docker_client.containers.list(all=True, filters={"name": naming.container_name(slug, "mallory")})


def test_clinician_cannot_start_a_notebook_server(hub, alice_project):
    slug, _ = alice_project
    carla = hub.as_user(hub.user_token("carla"))
    reply = start_server(hub, carla, "carla", slug)
    assert reply.status_code == 403
    assert "gives no access to notebooks" in reply.json()["message"]


def test_default_server_and_unknown_projects_are_refused(hub, alice_project):
    _, alice = alice_project
    reply = alice.post(f"{hub.public_url}/hub/api/users/alice/server", timeout=30)
    assert reply.status_code == 400 and "Choose a project" in reply.json()["message"]
    reply = start_server(hub, alice, "alice", "no-such-project")
    assert reply.status_code == 404 and "Unknown project" in reply.json()["message"]


def test_a_user_cannot_start_someone_elses_server(hub, alice_project):
    slug, _ = alice_project
    mallory = hub.as_user(hub.user_token("mallory")) if hub.api.get_user("mallory") else None
    if mallory is None:
        hub.add_user("mallory")
        mallory = hub.as_user(hub.user_token("mallory"))
    reply = start_server(hub, mallory, "alice", slug)
    assert reply.status_code in (403, 404)


def test_spawn_page_refuses_non_members_in_both_languages(hub, alice_project):
    """The browser path (/hub/spawn/...) after a real form login, not only the REST API."""
    slug, _ = alice_project
    password = hub.add_user("mallory")
    browser = hub.login("mallory", password)
    reply = browser.get(f"{hub.public_url}/hub/spawn/mallory/{slug}", timeout=60)
    assert reply.status_code == 403
    page = html.unescape(reply.content.decode("utf-8"))
    assert f"Vous n'êtes pas membre du projet {slug}" in page
    assert f"You are not a member of project {slug}" in page
