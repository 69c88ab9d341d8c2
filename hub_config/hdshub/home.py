"""What the home page shows a user: their projects, their role, the kit, their server, and
the project's published dashboards."""

from __future__ import annotations

from typing import Callable

from jupyterhub import orm

from . import dashboards
from .projects import NOTEBOOK_ROLES, Project, roles_by_project
from .settings import Settings


def projects_for(settings: Settings) -> Callable:
    """A template variable: called by JupyterHub with the current user (or None)."""

    def user_projects(user) -> list[dict]:
        if user is None:
            return []
        cards = []
        roles = roles_by_project(g.name for g in user.groups)
        for slug in sorted(roles):
            group = orm.Group.find(user.db, name=slug)
            project = Project.from_group(slug, group.properties) if group else None
            if project is None:
                continue
            kit = settings.kits.get(project.kit)
            tier = settings.tiers.get(project.tier)
            spawner = user.spawners.get(slug) if slug in user.orm_user.orm_spawners else None
            cards.append(
                {
                    "slug": slug,
                    "title": project.title,
                    "roles": sorted(roles[slug]),
                    "can_start": bool(roles[slug] & NOTEBOOK_ROLES),
                    "kit_title": kit.title if kit else {"fr": project.kit, "en": project.kit},
                    "kit_description": kit.description if kit else {"fr": "", "en": ""},
                    "tier_title": tier.title if tier else {"fr": project.tier, "en": project.tier},
                    "running": bool(spawner and spawner.active),
                    "ready": bool(spawner and spawner.ready),
                    "url": f"{user.url}{slug}/",
                    "dashboards": dashboards.live(project.dashboards),
                    "can_publish": bool(roles[slug] & dashboards.PUBLISHER_ROLES),
                }
            )
        return cards

    return user_projects
