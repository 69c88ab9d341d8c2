"""What the hub's project endpoints share: finding the project, the caller's roles in it, and
who acts (a member, or the `hdshub` CLI acting for someone it names). Dashboards
(dashboard_hub.py) and reports (report_hub.py) build on it."""

from __future__ import annotations

import asyncio

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from tornado import web

from . import naming
from .projects import Project, roles_by_project
from .settings import CLI_SERVICE
from .spawner import refusal


class ProjectHandler(BaseHandler):
    def project(self, slug: str) -> Project:
        try:
            naming.validate_slug(slug)
        except naming.InvalidName:
            raise refusal(404, f"Projet inconnu : {slug}.", f"Unknown project: {slug}.") from None
        group = orm.Group.find(self.db, name=slug)
        project = Project.from_group(slug, group.properties) if group else None
        if project is None:
            raise refusal(404, f"Projet inconnu : {slug}.", f"Unknown project: {slug}.")
        return project

    def roles(self, slug: str) -> set[str]:
        user = self.current_user
        if user is None or getattr(user, "kind", None) != "user":
            return set()
        return roles_by_project(g.name for g in user.groups).get(slug, set())

    def is_cli(self) -> bool:
        user = self.current_user
        return getattr(user, "kind", None) == "service" and user.name == CLI_SERVICE


class ProjectAPIHandler(ProjectHandler, APIHandler):
    def actor(self, slug: str, allowed_roles: frozenset[str], refused_fr: str, refused_en: str,
              named_must_hold_role: bool = False) -> str:
        """Who acts: a member holding one of `allowed_roles`, or the CLI for the person named
        in the body's `by` (with `named_must_hold_role`, a hub user holding one of those
        roles, as if they asked themselves). A server's own token never acts (a kernel can
        read it)."""
        user = self.current_user
        if user is None:
            raise web.HTTPError(403)
        token = self.get_token() if self.get_auth_token() else None
        if token is not None and (token.client_id != "jupyterhub" or (token.note or "").startswith("Server at ")):
            raise refusal(403, "Le jeton d'un serveur ne peut pas faire cette opération.",
                          "A server's token cannot do this.")
        if self.is_cli():
            by = str(self.body().get("by") or "").strip()[:64]
            if not by:
                raise refusal(400, "Le champ « by » (qui agit) est requis.", "Field 'by' (who acts) is required.")
            if named_must_hold_role and not self.named_roles(by, slug) & allowed_roles:
                raise refusal(403, f"{by} n'a pas ce rôle dans le projet {slug}. {refused_fr}",
                              f"{by} does not hold that role in project {slug}. {refused_en}")
            return f"{by} (hdshub CLI)"
        if not self.roles(slug) & allowed_roles:
            raise refusal(403, refused_fr, refused_en)
        return user.name

    def named_roles(self, name: str, slug: str) -> set[str]:
        """The roles in the project of the hub user called `name` (none if there is none)."""
        user = orm.User.find(self.db, name=name)
        return roles_by_project(g.name for g in user.groups).get(slug, set()) if user else set()

    def body(self) -> dict:
        if not hasattr(self, "_body"):
            self._body = self.get_json_body() or {}
            if not isinstance(self._body, dict):
                raise web.HTTPError(400, "expected a JSON object")
        return self._body

    async def in_thread(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)
