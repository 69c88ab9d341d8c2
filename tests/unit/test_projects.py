"""A project is a group with properties; roles are `<slug>:<role>` groups."""

import pytest

from hdshub.projects import ROLES, Project, role_group, roles_by_project


def test_project_round_trips_through_group_properties():
    project = Project(slug="demo", title="Démo", tier="public", kit="python-stats",
                      datasets=({"name": "a.csv", "sha256": "00"},))
    assert Project.from_group("demo", project.properties()) == project


def test_groups_that_are_not_projects_are_ignored():
    assert Project.from_group("staff", {}) is None
    assert Project.from_group("demo:analyst", {"kind": "something-else"}) is None


def test_roles_come_from_role_groups_only():
    groups = ["demo:analyst", "demo:clinician", "other:checker", "staff", "demo", "x:admin"]
    assert roles_by_project(groups) == {"demo": {"analyst", "clinician"}, "other": {"checker"}}


def test_unknown_role_is_refused_in_both_languages():
    with pytest.raises(ValueError, match="unknown role.*rôle inconnu"):
        role_group("demo", "owner")
    assert [role_group("demo", r) for r in ROLES][0] == "demo:analyst"
