"""The hub's reports API: run a study report, follow it, list the runs.

- POST /hub/api/hdshub/reports/<project>        {notebook, parameters?, by?} -> 202, the run
- GET  /hub/api/hdshub/reports/<project>        the runs this hub started (newest first)
- GET  /hub/api/hdshub/reports/<project>/<run>  one run: status, cell i of n, error, outputs

The project's analysts, statisticians and data stewards run reports (running one is running
code on the raw data); the `hdshub report run` CLI acts for the person it names. Everything
is checked before anything starts (the notebook exists, its kit is the project's, every
parameter is declared and plain JSON); then report_runs.py runs it in its own container. One
run at a time per project: a second one is refused while the first runs. Each ended run is a
`report-run` event of the project's audit trail (which usage counts for invoicing).
"""

from __future__ import annotations

import asyncio
import json
import logging

import docker
from tornado import web

from . import dashboards, report_runs, reports
from .audit_hub import Recorder, client_ip
from .audit_log import utc_now
from .project_api import ProjectAPIHandler
from .spawner import refusal

API_ROUTE = r"/api/hdshub/reports/([^/]+)"
API_ITEM_ROUTE = r"/api/hdshub/reports/([^/]+)/([^/]+)"
#: Runs kept in memory per project for the API (the outputs folder is the lasting record).
KEPT_RUNS = 50
log = logging.getLogger("JupyterHub")

_runs: dict[str, dict[str, report_runs.ReportRun]] = {}


def handlers(options: dict) -> list[tuple]:
    """options: tiers {name: enforced tier}, kit_images {kit: image}, audit_dir, trusted,
    max_notebook_bytes."""
    return [(API_ROUTE, ReportsAPIHandler, options), (API_ITEM_ROUTE, ReportAPIHandler, options)]


def running(slug: str) -> report_runs.ReportRun | None:
    return next((r for r in _runs.get(slug, {}).values() if r.finished_at is None), None)


def _refused(error: dashboards.DashboardError) -> web.HTTPError:
    return refusal(error.status, error.fr, error.en)


class _ReportsBase(ProjectAPIHandler):
    def initialize(self, tiers: dict, kit_images: dict, audit_dir: str, trusted: frozenset[str],
                   max_notebook_bytes: int):
        self.tiers, self.kit_images = tiers, kit_images
        self.audit_dir, self.trusted = audit_dir, trusted
        self.max_notebook_bytes = max_notebook_bytes

    def require_member(self, slug: str) -> None:
        if not self.is_cli() and not self.roles(slug):
            raise refusal(403, f"Vous n'êtes pas membre du projet {slug}.",
                          f"You are not a member of project {slug}.")


class ReportsAPIHandler(_ReportsBase):
    async def get(self, slug: str):
        self.project(slug)
        self.require_member(slug)
        runs = sorted(_runs.get(slug, {}).values(), key=lambda r: r.started_at, reverse=True)
        self.finish(json.dumps({"project": slug, "runs": [r.model() for r in runs]}))

    async def post(self, slug: str):
        project = self.project(slug)
        by = self.actor(slug, reports.RUNNER_ROLES,
                        f"Seuls les analystes, statisticiens et responsables des données du projet "
                        f"{slug} lancent ses rapports.",
                        f"Only project {slug}'s analysts, statisticians and data stewards run its reports.")
        body = self.body()
        tier, image = self.tiers.get(project.tier), self.kit_images.get(project.kit)
        if tier is None or image is None:
            raise refusal(500, f"Le projet {slug} utilise une offre ou un kit inconnu de ce hub.",
                          f"Project {slug} uses a tier or kit unknown to this hub.")
        try:
            source = reports.parse_source(str(body.get("notebook", "")))
            notebook = await self.read_notebook(slug, source)
            kits = reports.template_kits(notebook)
            if kits is not None and project.kit not in kits:
                raise reports.ReportError(
                    400, f"Le modèle {source.template} demande le kit {' ou '.join(kits)} ; le projet "
                         f"{slug} utilise {project.kit}.",
                    f"Template {source.template} needs kit {' or '.join(kits)}; project {slug} uses "
                    f"{project.kit}.")
            parameters = reports.validate_parameters(reports.declared_parameters(notebook),
                                                     body.get("parameters") or {})
        except dashboards.DashboardError as error:
            raise _refused(error) from None
        self.refuse_if_busy(slug)
        # A run started before the hub restarted is not in memory, but its container is; the
        # runner also counts on one run at a time (it settles the folders dead runs left).
        other = await self.in_thread(report_runs.running_elsewhere, docker.from_env(), slug)
        if other is not None:
            raise refusal(409, f"Un rapport lancé avant le redémarrage du hub tourne encore dans le "
                               f"projet {slug} ({other}) : attendez sa fin.",
                          f"A report started before the hub restarted is still running in project "
                          f"{slug} ({other}): wait for it to end.")
        self.refuse_if_busy(slug)  # again: another request may have started one meanwhile
        language = parameters.get("language", "fr") if isinstance(parameters.get("language"), str) else "fr"
        run = report_runs.ReportRun(
            run=reports.run_name(source), project=slug,
            source=f"work/{source.work_path}" if source.work_path else source.template,
            parameters=parameters, requested_by=by,
            title=reports.title_of(notebook, source, language))
        kept = _runs.setdefault(slug, {})
        kept[run.run] = run
        for old in sorted(kept.values(), key=lambda r: r.started_at)[:-KEPT_RUNS]:
            kept.pop(old.run)
        asyncio.ensure_future(self.execute(run, tier, project.kit, image, client_ip(self.request, self.trusted)))
        self.set_status(202)
        self.finish(json.dumps(run.model()))

    def refuse_if_busy(self, slug: str) -> None:
        if (busy := running(slug)) is not None:
            raise refusal(409, f"Un rapport tourne déjà dans le projet {slug} ({busy.run}) : "
                               "attendez sa fin.",
                          f"A report is already running in project {slug} ({busy.run}): wait "
                          "for it to end.")

    async def read_notebook(self, slug: str, source: reports.Source) -> dict:
        if source.template:
            raw = reports.templates()[source.template].read_bytes()
        else:
            volume = await self.in_thread(lambda: dashboards.DashboardVolume(docker.from_env(), slug))
            raw = await self.in_thread(volume.read_notebook, source.work_path, self.max_notebook_bytes)
        try:
            notebook = json.loads(raw)
            assert isinstance(notebook, dict)
        except (ValueError, AssertionError):
            raise reports.ReportError(400, f"{source.label} n'est pas un notebook lisible (JSON).",
                                      f"{source.label} is not a readable notebook (JSON).") from None
        return notebook

    async def execute(self, run: report_runs.ReportRun, tier: dict, kit: str, image: str, source_ip: str):
        """Run to the end, then record it; whatever happens, the run ends with a status."""
        client = docker.from_env(timeout=report_runs.TIME_LIMIT_SECONDS + 120)
        container = None
        try:
            container = await self.in_thread(report_runs.create_container, client, run, tier, kit, image)
            await self.in_thread(report_runs.follow, container, run)
        except Exception as error:
            log.exception("hdshub: report %s/%s could not run", run.project, run.run)
            report_runs.finish(run, None, None, [], failure=str(error))
        finally:
            if container is not None:
                await self.in_thread(report_runs.remove, container)
        log.info("hdshub: report %s/%s by %s ended: %s", run.project, run.run, run.requested_by, run.status)
        Recorder.for_directory(self.audit_dir).submit(run.project, {
            "time": utc_now(), "user": run.requested_by, "action": "report-run",
            "target": run.folder, "outcome": "ok" if run.status == "ok" else "failed",
            "source_ip": source_ip, "details": {"source": run.source}})


class ReportAPIHandler(_ReportsBase):
    async def get(self, slug: str, name: str):
        self.project(slug)
        self.require_member(slug)
        run = _runs.get(slug, {}).get(name)
        if run is None:
            raise refusal(404, f"Aucune exécution {name} connue de ce hub dans le projet {slug} "
                               "(ses rapports sont dans outputs/reports/).",
                          f"No run {name} known to this hub in project {slug} (its reports are "
                          "in outputs/reports/).")
        self.finish(json.dumps(run.model()))
