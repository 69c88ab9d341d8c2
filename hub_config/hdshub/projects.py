"""The project model: a project is a JupyterHub group with properties; roles are groups too.

- group `<slug>`: the project record, its properties say {kind: project, tier, kit, title,
  datasets, dashboards}; it has no members of its own.
- group `<slug>:<role>`: the members holding a role in the project (analyst, statistician,
  clinician, checker, steward). An identity provider's groups map onto these one to one.

The hub database is the single source of truth; this module only reads group data, from
ORM objects (inside the hub) or REST models (in the CLI), in the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

PROJECT_KIND = "project"
ROLES = ("analyst", "statistician", "clinician", "checker", "steward")
# Roles that work in notebooks. Clinicians only view dashboards; checkers only review
# outputs in the airlock.
NOTEBOOK_ROLES = frozenset({"analyst", "statistician", "steward"})


@dataclass(frozen=True)
class Project:
    slug: str
    title: str
    tier: str
    kit: str
    datasets: tuple[dict, ...] = field(default=())
    # Published dashboards and their versions (dashboards.py).
    dashboards: tuple[dict, ...] = field(default=())

    @classmethod
    def from_group(cls, name: str, properties: dict) -> "Project | None":
        """The project recorded by a group, or None if the group is not a project."""
        if (properties or {}).get("kind") != PROJECT_KIND:
            return None
        return cls(
            slug=name,
            title=properties.get("title", name),
            tier=properties["tier"],
            kit=properties["kit"],
            datasets=tuple(properties.get("datasets", ())),
            dashboards=tuple(properties.get("dashboards", ())),
        )

    def properties(self) -> dict:
        return {
            "kind": PROJECT_KIND,
            "title": self.title,
            "tier": self.tier,
            "kit": self.kit,
            "datasets": list(self.datasets),
            "dashboards": list(self.dashboards),
        }


def role_group(slug: str, role: str) -> str:
    if role not in ROLES:
        raise ValueError(
            f"unknown role {role!r}: expected one of {', '.join(ROLES)} / "
            f"rôle inconnu {role!r} : attendu {', '.join(ROLES)}"
        )
    return f"{slug}:{role}"


def roles_by_project(group_names: Iterable[str]) -> dict[str, set[str]]:
    """{project slug: roles} from the names of the groups a user belongs to."""
    roles: dict[str, set[str]] = {}
    for name in group_names:
        slug, sep, role = name.rpartition(":")
        if sep and role in ROLES:
            roles.setdefault(slug, set()).add(role)
    return roles
