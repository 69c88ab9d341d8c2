"""Hostile names through the REST API: refused by the hub, or escaped before Docker."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from hdshub import naming

from .conftest import start_server, stop_server, new_slug, wait_ready

pytestmark = pytest.mark.docker


@pytest.mark.parametrize("name", ["../etc", "Alice", "a b", "x" * 200, "éloïse", "a/b", "a@chu.fr"])
def test_hostile_usernames_are_refused_by_the_hub(hub, name):
    with pytest.raises(Exception) as error:
        hub.api.create_user(name)
    assert getattr(error.value, "status", None) in (400, 404), error.value


@pytest.mark.parametrize("server", ["../etc", "Bad", "a b", "x" * 31, "é"])
def test_hostile_server_names_never_reach_docker(hub, new_project, docker_client, server):
    new_project({"alice": "analyst"})
    alice = hub.as_user(hub.user_token("alice"))
    before = {c.name for c in docker_client.containers.list(all=True)}
    reply = alice.post(f"{hub.public_url}/hub/api/users/alice/servers/{quote(server, safe='')}", timeout=30)
    assert reply.status_code in (400, 404), reply.text
    assert {c.name for c in docker_client.containers.list(all=True)} == before


def test_a_group_made_by_hand_is_not_a_project(hub, docker_client, new_project):
    """Only groups recorded as projects (by the CLI) start servers."""
    handmade = new_slug()
    new_project({"alice": "analyst"})
    hub.api.create_group(handmade)
    try:
        hub.api.add_group_users(handmade, ["alice"])
        alice = hub.as_user(hub.user_token("alice"))
        reply = start_server(hub, alice, "alice", handmade)
        assert reply.status_code == 404 and "Unknown project" in reply.json()["message"]
    finally:
        hub.api.delete_group(handmade)


def test_usernames_with_dots_are_escaped_in_docker_names(hub, new_project, docker_client):
    slug = new_project({"jean.dupont": "analyst"})
    session = hub.as_user(hub.user_token("jean.dupont"))
    assert start_server(hub, session, "jean.dupont", slug).status_code in (201, 202)
    wait_ready(hub, session, "jean.dupont", slug)
    container = docker_client.containers.get(naming.container_name(slug, "jean.dupont"))
    assert container.name == f"hds-{slug}.jean_2edupont"
    assert container.labels["org.hdshub.user"] == "jean_2edupont"
    stop_server(hub, session, "jean.dupont", slug)
