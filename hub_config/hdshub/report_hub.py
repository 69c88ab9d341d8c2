"""The hub's reports API: run a study report, follow it, list the runs.

- POST /hub/api/hdshub/reports/<project>        {notebook, parameters?, by?} -> 202, the run
- GET  /hub/api/hdshub/reports/<project>        the runs this hub started (newest first)
- GET  /hub/api/hdshub/reports/<project>/<run>  one run: status, cell i of n, error, outputs

The project's analysts, statisticians and data stewards run reports (running one is running
code on the raw data) and see their runs; the `hdshub report run` CLI acts for the person it
names, who must hold one of those roles too. Everything is checked before anything starts
(the notebook exists, its kit is the project's, every parameter is declared and plain JSON,
`min_count` is not under the disclosure policy's floor); then report_runs.py runs it in its
own container, followed by a thread of its own (a run lasts up to hours: it must not hold one
of the few threads the hub shares for short Docker calls). One run at a time per project: a
second one is refused while the first runs. A run a previous hub process started is found in
Docker by the next request about the project and followed to its end like any other
(adopt). Each ended run is a `report-run` event of the project's audit trail (which usage
counts for invoicing), with the exit code and the sha256 of every file the hub found in its
folder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading

import docker
from tornado import web

from . import dashboards, report_runs, reports
from .audit_hub import Recorder, client_ip
from .project_api import ProjectAPIHandler
from .spawner import refusal

API_ROUTE = r"/api/hdshub/reports/([^/]+)"
API_ITEM_ROUTE = r"/api/hdshub/reports/([^/]+)/([^/]+)"
#: Runs kept in memory per project for the API (the outputs folder is the lasting record).
KEPT_RUNS = 50
#: How long a request waits for the end of a run whose container ended to be recorded.
SETTLE_SECONDS = 60
log = logging.getLogger("JupyterHub")

_runs: dict[str, dict[str, report_runs.ReportRun]] = {}
#: The coroutine following each unfinished run, by (project, run).
_following: dict[tuple[str, str], asyncio.Future] = {}


def handlers(options: dict) -> list[tuple]:
    """options: tiers {name: enforced tier}, kit_images {kit: image}, audit_dir, trusted,
    max_notebook_bytes, min_count (the disclosure floor, defaults/egress.yaml)."""
    return [(API_ROUTE, ReportsAPIHandler, options), (API_ITEM_ROUTE, ReportAPIHandler, options)]


def running(slug: str) -> report_runs.ReportRun | None:
    return next((r for r in _runs.get(slug, {}).values() if r.finished_at is None), None)


def _refused(error: dashboards.DashboardError) -> web.HTTPError:
    return refusal(error.status, error.fr, error.en)


async def in_own_thread(function, *args):
    """function(*args) in a new daemon thread, awaited. Not the event loop's default pool:
    it has a handful of threads for the hub's short blocking calls, which a few report runs
    of hours would take all of; and not a pool of its own either, whose threads Python joins
    at exit (a hub stopping would wait for the longest run)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def settle(result, error) -> None:
        if not done.cancelled():
            done.set_exception(error) if error is not None else done.set_result(result)

    def work() -> None:
        try:
            result, error = function(*args), None
        except BaseException as failure:  # handed to the awaiting coroutine
            result, error = None, failure
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the hub is stopping: nobody awaits it any more

    threading.Thread(target=work, name=f"hdshub-{getattr(function, '__name__', 'work')}", daemon=True).start()
    return await done


class _ReportsBase(ProjectAPIHandler):
    def initialize(self, tiers: dict, kit_images: dict, audit_dir: str, trusted: frozenset[str],
                   max_notebook_bytes: int, min_count: int):
        self.tiers, self.kit_images = tiers, kit_images
        self.audit_dir, self.trusted = audit_dir, trusted
        self.max_notebook_bytes, self.min_count = max_notebook_bytes, min_count

    def require_runner(self, slug: str) -> None:
        """Runs show parameters, who asked and the last lines a run printed (which may quote
        data): for the people who may run reports, as the runs themselves."""
        if not self.is_cli() and not self.roles(slug) & reports.RUNNER_ROLES:
            raise refusal(403, f"Seuls les analystes, statisticiens et responsables des données du "
                               f"projet {slug} voient ses rapports en cours.",
                          f"Only project {slug}'s analysts, statisticians and data stewards see its "
                          "report runs.")

    async def adopt(self, slug: str) -> None:
        """Follow, to its end, every report container of the project that no run in memory
        stands for: it was started before the hub restarted. Its end is recorded as any
        other's, and one past the time limit is stopped."""
        kept = _runs.setdefault(slug, {})
        client = await self.in_thread(follower_client)
        found = await self.in_thread(report_runs.unfollowed, client, slug, set(kept))
        for container in found:
            run = report_runs.adopted_run(container)
            if run.run in kept:  # another request adopted it meanwhile
                continue
            log.info("hdshub: following report %s/%s, started before the hub restarted", slug, run.run)
            keep(run)
            _following[(slug, run.run)] = asyncio.ensure_future(
                self.execute(run, report_runs.carry_out, client, run, None, "", "", container))

    async def settle_ended(self, slug: str) -> None:
        """Wait for the follower of a run whose container Docker says has ended: it is about
        to record it (a second or two), and the project is then free for the next run. Ended
        is any state but those of a container at work: the follower removing the container
        makes it "removing"."""
        busy = running(slug)
        following = _following.get((slug, busy.run)) if busy else None
        if following is None:
            return
        state = await self.in_thread(lambda: report_runs.container_state(docker.from_env(), busy.project, busy.run))
        if state not in report_runs.RUNNING_STATES:
            try:
                await asyncio.wait_for(asyncio.shield(following), timeout=SETTLE_SECONDS)
            except asyncio.TimeoutError:
                log.warning("hdshub: report %s/%s ended in Docker (%s) but is still being recorded "
                            "after %d s", slug, busy.run, state, SETTLE_SECONDS)

    async def execute(self, run: report_runs.ReportRun, *work) -> None:
        """Carry the run out in its own thread, record its end, and only then show it ended
        (whoever sees a run done finds it in the audit trail)."""
        try:
            ended = await in_own_thread(*work)
        except Exception as error:  # carry_out settles its own failures: this is a bug
            log.exception("hdshub: report %s/%s could not be followed", run.project, run.run)
            ended = dataclasses.replace(run)
            report_runs.finish(ended, None, None, [], failure=str(error))
        log.info("hdshub: report %s/%s by %s ended: %s", run.project, run.run, run.requested_by, ended.status)
        try:
            await Recorder.for_directory(self.audit_dir).write(run.project, [report_runs.end_event(ended)])
            log.info("hdshub: report %s/%s: its end is in the audit trail", run.project, run.run)
        except Exception:
            log.exception("hdshub: the end of report %s/%s could not be recorded", run.project, run.run)
        finally:
            vars(run).update(vars(ended))
            _following.pop((run.project, run.run), None)


def follower_client() -> docker.DockerClient:
    """A Docker client for following runs: it waits on a run's log stream for as long as the
    run is quiet. Made in a thread: docker-py asks the engine its API version on creation,
    which must not hold the hub's event loop when the engine is slow."""
    return docker.from_env(timeout=report_runs.TIME_LIMIT_SECONDS + 120)


def keep(run: report_runs.ReportRun) -> None:
    kept = _runs.setdefault(run.project, {})
    kept[run.run] = run
    for old in sorted(kept.values(), key=lambda r: r.started_at)[:-KEPT_RUNS]:
        if old.finished_at is not None:
            kept.pop(old.run)


class ReportsAPIHandler(_ReportsBase):
    async def get(self, slug: str):
        self.project(slug)
        self.require_runner(slug)
        await self.adopt(slug)
        runs = sorted(_runs.get(slug, {}).values(), key=lambda r: r.started_at, reverse=True)
        self.finish(json.dumps({"project": slug, "runs": [r.model() for r in runs]}))

    async def post(self, slug: str):
        project = self.project(slug)
        by = self.actor(slug, reports.RUNNER_ROLES,
                        f"Seuls les analystes, statisticiens et responsables des données du projet "
                        f"{slug} lancent ses rapports.",
                        f"Only project {slug}'s analysts, statisticians and data stewards run its reports.",
                        named_must_hold_role=True)
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
                         f"{slug} utilise {project.kit}, dont le Python n'a pas les bibliothèques du "
                         "modèle (pandas, lifelines…). Lancez plutôt un notebook R du dossier work.",
                    f"Template {source.template} needs kit {' or '.join(kits)}; project {slug} uses "
                    f"{project.kit}, whose Python lacks the template's libraries (pandas, "
                    "lifelines…). Run an R notebook of the work folder instead.")
            declared = reports.declared_parameters(notebook)
            parameters = reports.validate_parameters(declared, body.get("parameters") or {},
                                                     reports.notebook_language(notebook))
            reports.check_min_count(declared, parameters, self.min_count)
        except dashboards.DashboardError as error:
            raise _refused(error) from None
        client = await self.in_thread(follower_client)  # the new run's, made before the checks below
        # A run started before the hub restarted is not in memory, but its container is; the
        # runner also counts on one run at a time (it settles the folders dead runs left).
        await self.adopt(slug)
        await self.settle_ended(slug)
        self.refuse_if_busy(slug)
        language = parameters.get("language", "fr") if isinstance(parameters.get("language"), str) else "fr"
        run = report_runs.ReportRun(
            run=reports.run_name(source), project=slug,
            source=f"work/{source.work_path}" if source.work_path else source.template,
            parameters=parameters, requested_by=by,
            title=reports.title_of(notebook, source, language),
            source_ip=client_ip(self.request, self.trusted))
        keep(run)  # no await between refuse_if_busy and here: one run at a time
        _following[(slug, run.run)] = asyncio.ensure_future(
            self.execute(run, report_runs.carry_out, client, run, tier, project.kit, image))
        self.set_status(202)
        self.finish(json.dumps(run.model()))

    def refuse_if_busy(self, slug: str) -> None:
        if (busy := running(slug)) is not None and busy.adopted:
            raise refusal(409, f"Un rapport lancé avant le redémarrage du hub tourne encore dans le "
                               f"projet {slug} ({busy.run}) : attendez sa fin.",
                          f"A report started before the hub restarted is still running in project "
                          f"{slug} ({busy.run}): wait for it to end.")
        if busy is not None:
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


class ReportAPIHandler(_ReportsBase):
    async def get(self, slug: str, name: str):
        self.project(slug)
        self.require_runner(slug)
        run = _runs.get(slug, {}).get(name)
        if run is None:
            raise refusal(404, f"Aucune exécution {name} connue de ce hub dans le projet {slug} "
                               "(ses rapports sont dans outputs/reports/).",
                          f"No run {name} known to this hub in project {slug} (its reports are "
                          "in outputs/reports/).")
        self.finish(json.dumps(run.model()))
