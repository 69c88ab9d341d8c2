"""The hub's side of dashboards: publishing, withdrawing, and opening them.

- GET    /hub/api/hdshub/dashboards/<project>          the project's live dashboards (members)
- POST   /hub/api/hdshub/dashboards/<project>          publish {notebook, title?, name?}
- DELETE /hub/api/hdshub/dashboards/<project>/<name>   withdraw
- GET    /hub/dashboards/<project>/<name>              open one: starts the project's dashboard
                                                       server if needed, then redirects to it

Publishing and withdrawing are for the project's analysts, statisticians and stewards (and
the `hdshub` CLI, which names the person it acts for). They run here, in the hub, so that
there is one way to do them: the snapshot (dashboards.py), the record in the project group's
properties, then a restart of the dashboard server `dashboards/<project>` so that its
preheated kernels run the new version.

Viewers reach that server through a JupyterHub role held by the project's role groups
(`<project>:clinician`, `<project>:analyst`, ...) that grants
`access:servers!server=dashboards/<project>` and nothing else (dashboard_server.grant_viewers).
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import docker
from jupyterhub import orm
from tornado import web

from . import dashboards, naming
from .audit_hub import Recorder, client_ip
from .audit_log import utc_now
from .dashboard_server import grant_viewers
from .project_api import ProjectAPIHandler, ProjectHandler
from .spawner import refusal

API_ROUTE = r"/api/hdshub/dashboards/([^/]+)"
API_ITEM_ROUTE = r"/api/hdshub/dashboards/([^/]+)/([^/]+)"
PAGE_ROUTE = r"/dashboards/([^/]+)/([^/]+)"
#: How long publishing waits for the restarted dashboard server before answering.
READY_SECONDS = 90

_locks: dict[str, asyncio.Lock] = {}


class NoConfirmClients(frozenset):
    """OAuth clients JupyterHub lets through without its "Authorize access" page: the
    projects' dashboard servers, `jupyterhub-user-dashboards-<project>`. No other user's
    clients start so (auth.NoSystemUserLogin refuses usernames `dashboards-...`)."""

    PREFIX = f"jupyterhub-user-{dashboards.OWNER}-"

    def __contains__(self, identifier) -> bool:
        return (isinstance(identifier, str) and identifier.startswith(self.PREFIX)
                and naming.SLUG_PATTERN.fullmatch(identifier[len(self.PREFIX):]) is not None)


def handlers(max_notebook_bytes: int, audit_dir: str, trusted: frozenset[str]) -> list[tuple]:
    options = {"max_notebook_bytes": max_notebook_bytes}
    return [
        (API_ROUTE, DashboardsAPIHandler, options),
        (API_ITEM_ROUTE, DashboardAPIHandler, options),
        (PAGE_ROUTE, DashboardPageHandler, {"audit_dir": audit_dir, "trusted": trusted}),
    ]


def server_url(owner_url: str, slug: str, name: str) -> str:
    return f"{owner_url}{slug}/voila/render/{quote(name)}.ipynb"


def _refused(error: dashboards.DashboardError) -> web.HTTPError:
    return refusal(error.status, error.fr, error.en)


class _DashboardHandler(ProjectHandler):
    def initialize(self, max_notebook_bytes: int = 0):
        self.max_notebook_bytes = max_notebook_bytes

    def require_member(self, slug: str) -> set[str]:
        roles = self.roles(slug)
        if not roles and not getattr(self.current_user, "admin", False):
            raise refusal(403, f"Vous n'êtes pas membre du projet {slug} : ses tableaux de bord ne "
                               "vous sont pas ouverts.",
                          f"You are not a member of project {slug}: its dashboards are not open to you.")
        return roles

    def owner_spawner(self, slug: str):
        owner = self.user_from_username(dashboards.OWNER)
        spawner = owner.get_or_create_spawner(slug, display_name=f"{slug} dashboards", replace_failed=True)
        grant_viewers(self.db, slug)
        return owner, spawner

    async def start_server(self, slug: str):
        """Start the dashboard server unless it runs or is starting; (owner, spawner)."""
        owner, spawner = self.owner_spawner(slug)
        if not spawner.active:
            await self.spawn_single_user(owner, slug)
        return owner, spawner

    async def restart_server(self, slug: str, serve: bool) -> dict:
        """Stop the dashboard server, and start it again if there is something to serve."""
        owner, spawner = self.owner_spawner(slug)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_SECONDS
        while spawner.pending and loop.time() < deadline:
            await asyncio.sleep(0.2)
        if spawner.active:
            await self.stop_single_user(owner, slug)
        if not serve:
            return {"server": "stopped"}
        await self.spawn_single_user(owner, slug)
        while not spawner.ready and spawner.active and loop.time() < deadline:
            await asyncio.sleep(0.2)
        return {"server": "ready" if spawner.ready else ("starting" if spawner.active else "failed")}


class _DashboardAPIBase(_DashboardHandler, ProjectAPIHandler):
    def actor(self, slug: str) -> str:
        """Who publishes or withdraws: a publisher of the project, or the CLI for someone."""
        return super().actor(
            slug, dashboards.PUBLISHER_ROLES,
            f"Seuls les analystes, statisticiens et responsables des données du projet {slug} "
            "publient ou retirent ses tableaux de bord.",
            f"Only project {slug}'s analysts, statisticians and data stewards publish or "
            "withdraw its dashboards.")

    def save(self, slug: str, records: list[dict]) -> None:
        group = orm.Group.find(self.db, name=slug)
        group.properties = {**group.properties, "dashboards": records}
        self.db.commit()


class DashboardsAPIHandler(_DashboardAPIBase):
    async def get(self, slug: str):
        project = self.project(slug)
        if not self.is_cli():
            self.require_member(slug)
        self.finish(json.dumps({"project": slug, "dashboards": dashboards.live(project.dashboards),
                                "records": list(project.dashboards)}))

    async def post(self, slug: str):
        self.project(slug)
        by = self.actor(slug)
        body = self.body()
        async with _locks.setdefault(slug, asyncio.Lock()):
            project = self.project(slug)  # read again under the lock
            try:
                path = dashboards.notebook_path(str(body.get("notebook", "")))
                name = dashboards.validate_name(body["name"]) if body.get("name") else dashboards.default_name(path)
                version = dashboards.next_version(project.dashboards, name)
                previous = dashboards.find(project.dashboards, name)
                previous_live = previous["versions"][-1]["version"] if previous and dashboards.is_live(previous) else None
                at = dashboards.now()
                volume = await self.in_thread(lambda: dashboards.DashboardVolume(docker.from_env(), slug))
                raw = await self.in_thread(volume.read_notebook, path, self.max_notebook_bytes)
                snap, title = dashboards.snapshot(raw, name, body.get("title"), version, by, at)
                await self.in_thread(volume.write, snap)
            except dashboards.DashboardError as error:
                raise _refused(error) from None
            entry = dashboards.version_entry(snap, path, by, at)
            try:
                self.save(slug, dashboards.with_publication(project.dashboards, name, title, entry))
            except Exception:
                await self.in_thread(volume.restore, name, previous_live)
                raise
            self.log.info("hdshub: dashboard %s/%s version %d published by %s (sha256 %s)",
                          slug, name, version, by, snap.sha256)
            server = await self.restart_server(slug, serve=True)
        self.set_status(201)
        self.finish(json.dumps({"project": slug, "name": name, "title": title, **entry, **server}))


class DashboardAPIHandler(_DashboardAPIBase):
    async def delete(self, slug: str, name: str):
        self.project(slug)
        by = self.actor(slug)
        async with _locks.setdefault(slug, asyncio.Lock()):
            project = self.project(slug)
            try:
                records = dashboards.with_withdrawal(project.dashboards, dashboards.validate_name(name),
                                                     by, dashboards.now())
                volume = await self.in_thread(lambda: dashboards.DashboardVolume(docker.from_env(), slug))
                await self.in_thread(volume.remove_live, name)
            except dashboards.DashboardError as error:
                raise _refused(error) from None
            self.save(slug, records)
            self.log.info("hdshub: dashboard %s/%s withdrawn by %s", slug, name, by)
            server = await self.restart_server(slug, serve=bool(dashboards.live(records)))
        self.finish(json.dumps({"project": slug, "name": name, "withdrawn": True, **server}))


class DashboardPageHandler(_DashboardHandler):
    """A member opens a dashboard: the server is started on demand, then the browser goes to
    it. Its own OAuth login checks the viewers' role; this page only spares members a dead link.
    Each opening is a `dashboard-view` in the project's audit trail (usage counts them)."""

    def initialize(self, audit_dir: str = "", trusted: frozenset[str] = frozenset()):
        super().initialize()
        self.audit_dir = audit_dir
        self.trusted = trusted

    @web.authenticated
    async def get(self, slug: str, name: str):
        project = self.project(slug)
        self.require_member(slug)
        if not any(d["name"] == name for d in dashboards.live(project.dashboards)):
            raise refusal(404, f"Le tableau de bord {name} n'est pas publié dans le projet {slug}.",
                          f"Dashboard {name} is not published in project {slug}.")
        owner, spawner = await self.start_server(slug)
        if spawner.ready:
            if self.audit_dir:
                Recorder.for_directory(self.audit_dir).submit(slug, {
                    "time": utc_now(), "user": self.current_user.name, "action": "dashboard-view",
                    "target": f"dashboards/{slug}/{name}", "outcome": "ok",
                    "source_ip": client_ip(self.request, self.trusted)})
            self.redirect(server_url(owner.url, slug, name))
            return
        if not spawner.active:
            raise refusal(503, "Le serveur des tableaux de bord n'a pas démarré ; réessayez dans "
                               "un instant ou prévenez l'équipe du projet.",
                          "The dashboard server did not start; try again in a moment or tell the "
                          "project's team.")
        html = await self.render_template("dashboard-starting.html", project=project,
                                          dashboard=name)
        self.set_header("Cache-Control", "no-store")
        self.finish(html)
