"""Work lives in project volumes: shared between members, kept across stops and hub restarts."""

from __future__ import annotations

import pytest

from .conftest import start_server, stop_server, wait_ready

pytestmark = pytest.mark.docker


def contents(hub, session, user, slug, path):
    return f"{hub.public_url}/user/{user}/{slug}/api/contents/{path}"


def test_work_is_shared_and_survives_stop_and_hub_restart(hub, new_project):
    slug = new_project({"alice": "analyst", "bob": "analyst"})
    alice = hub.as_user(hub.user_token("alice"))
    bob = hub.as_user(hub.user_token("bob"))
    text = "résultat intermédiaire — 42\n"

    assert start_server(hub, alice, "alice", slug).status_code in (201, 202)
    wait_ready(hub, alice, "alice", slug)
    reply = alice.put(contents(hub, alice, "alice", slug, "work/note.txt"),
                      json={"type": "file", "format": "text", "content": text}, timeout=30)
    assert reply.status_code in (200, 201), reply.text

    # A second member of the project sees the same work area.
    assert start_server(hub, bob, "bob", slug).status_code in (201, 202)
    wait_ready(hub, bob, "bob", slug)
    seen = bob.get(contents(hub, bob, "bob", slug, "work/note.txt"), timeout=30).json()
    assert seen["content"] == text
    stop_server(hub, bob, "bob", slug)

    # Stop, restart the hub, start again: the file is still there.
    stop_server(hub, alice, "alice", slug)
    hub.restart()
    assert start_server(hub, alice, "alice", slug).status_code in (201, 202)
    wait_ready(hub, alice, "alice", slug)
    again = alice.get(contents(hub, alice, "alice", slug, "work/note.txt"), timeout=30).json()
    assert again["content"] == text
    stop_server(hub, alice, "alice", slug)


def test_a_running_server_survives_a_hub_restart(hub, new_project):
    slug = new_project({"alice": "analyst"})
    alice = hub.as_user(hub.user_token("alice"))
    assert start_server(hub, alice, "alice", slug).status_code in (201, 202)
    wait_ready(hub, alice, "alice", slug)
    hub.restart()
    # The hub checks the servers it finds for up to init_spawners_timeout, serving meanwhile:
    # the server is pending a moment, then ready (not stopped, not gone).
    wait_ready(hub, alice, "alice", slug, timeout=60)
    assert alice.get(f"{hub.public_url}/user/alice/{slug}/api/status", timeout=30).status_code == 200
    stop_server(hub, alice, "alice", slug)
