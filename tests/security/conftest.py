"""Security tests run against the same real hub, Docker and images as the integration tests.

One project server (alice's) is started once for the session: headers, tokens, cross-user
access and container environment are all checked on it, to keep the suite short.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import requests

from tests.integration.conftest import (  # noqa: F401 (fixtures and hooks)
    docker_client,
    hub,
    new_project,
    new_slug,
    pytest_runtest_makereport,
    start_server,
    stop_server,
    wait_ready,
)

@dataclass
class ProjectServer:
    """alice's running server of project `slug`; bob is a member too, mallory is not."""

    slug: str
    url: str  # https://host:port/user/alice/<slug>
    passwords: dict[str, str]
    tokens: dict[str, str]

    def as_user(self, hub, user: str) -> requests.Session:
        return hub.as_user(self.tokens[user])


@pytest.fixture(scope="session")
def alice_server(hub, docker_client):
    slug = new_slug()
    hub.cli("project", "create", slug, "--tier", "public", "--kit", "python-stats", "--title", slug)
    passwords = {}
    for user, role in (("alice", "analyst"), ("bob", "analyst"), ("mallory", None)):
        passwords[user] = hub.add_user(user)
        if role:
            hub.cli("project", "add-member", slug, user, "--role", role)
    tokens = {user: hub.user_token(user) for user in passwords}
    server = ProjectServer(slug, f"{hub.public_url}/user/alice/{slug}", passwords, tokens)
    alice = server.as_user(hub, "alice")
    reply = start_server(hub, alice, "alice", slug)
    assert reply.status_code in (201, 202), reply.text
    wait_ready(hub, alice, "alice", slug)
    yield server
    stop_server(hub, alice, "alice", slug)
