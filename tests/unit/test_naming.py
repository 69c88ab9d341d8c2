"""Names typed by people never reach Docker raw."""

import re

import pytest

from hdshub import naming

DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
HOSTILE = ["../etc", "a b", "ABC", "x" * 200, "données", "a--b", "-a", "a-", "", "a/b", "a.b", "a:b", "1abc",
           "demo\n"]


@pytest.mark.parametrize("slug", HOSTILE)
def test_hostile_slugs_are_refused(slug):
    with pytest.raises(naming.InvalidName, match="1-30 characters"):
        naming.validate_slug(slug)


@pytest.mark.parametrize("slug", ["a", "demo", "cohorte-diabete-2026", "x" * 30])
def test_good_slugs_fit_named_servers(slug):
    assert naming.validate_slug(slug) == slug
    assert re.fullmatch(r"[a-z0-9-]{1,30}", slug)


@pytest.mark.parametrize("slug", HOSTILE)
def test_docker_names_refuse_hostile_projects(slug):
    with pytest.raises(naming.InvalidName):
        naming.container_name(slug, "alice")
    with pytest.raises(naming.InvalidName):
        naming.volume_name(slug, "data")


USERS = ["alice", "Alice", "al ice", "../../root", "éloïse", "a" * 200, "a" * 199 + "b",
         "_2e", ".", "a.b", "a_2eb", "用户", "x\x00y", "10003456789"]


def test_escaped_usernames_are_docker_safe_and_distinct():
    escaped = [naming.escape_username(u) for u in USERS]
    assert len(set(escaped)) == len(USERS)
    for value in escaped:
        assert re.fullmatch(r"[a-z0-9_]{1,40}", value), value
    for user in USERS:
        assert DOCKER_NAME.match(naming.container_name("demo", user))


def test_container_names_cannot_collide_across_projects():
    # '-' is in slugs, never the separator: (a-b, c) and (a, b-c) differ.
    assert naming.container_name("a-b", "c") != naming.container_name("a", "b-c")


def test_bridge_interfaces_fit_linux_and_the_firewall_match():
    for slug in ["a", "x" * 30, "cohorte-diabete-2026"]:
        name = naming.bridge_interface(slug)
        assert len(name) <= 15 and name.startswith("hds-")
    assert naming.bridge_interface("a") != naming.bridge_interface("b")


@pytest.mark.parametrize("username", ["Alice", "a b", "x" * 65, "", "../x", "é", "a@b.fr", "alice\n"])
def test_usernames_outside_the_pattern_are_refused(username):
    with pytest.raises(naming.InvalidName):
        naming.validate_username(username)
