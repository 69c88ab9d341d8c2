"""One report run: a fresh one-off container of the project's kit, followed to its end.

The container is locked down like a project server (containers.hardening and the tier's
limits: non-root, no capability, read-only root, private IPC, memory, CPU and process caps)
and is even more closed: no network at all (a report reads files and writes files), raw data
and the work area read-only, only `outputs` writable. It runs
extensions/hdshub_kit/report_runner.py, whose lines say which cell is running; the last one
carries the provenance. The hub keeps the state of each run in memory (ReportRun) for the
API; the outputs and provenance.json in the project's `outputs/reports/<run>/` are the record,
and Docker is the truth on whether a run still goes (running_elsewhere).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import docker
import docker.errors

from . import containers, hardening, naming, project_resources
from .reports import TEMPLATES_DIR

PURPOSE = hardening.REPORT_PURPOSE
LABEL_RUN = "org.hdshub.report-run"
SHARE = "/opt/hdshub/share"
#: Shipped templates and the nbconvert template, read-only, where Jupyter looks for them.
TEMPLATES_MOUNT = f"{SHARE}/reports"
NBCONVERT_SOURCE = containers.REPO_ROOT / "templates" / "nbconvert"
NBCONVERT_MOUNT = f"{SHARE}/nbconvert/templates"
PROGRESS_MARKER = "HDSHUB-REPORT-PROGRESS "  # extensions/hdshub_kit/report_runner.py
RESULT_MARKER = "HDSHUB-REPORT-RESULT "
#: A study longer than this is stopped; it can be split, or run in a notebook server.
TIME_LIMIT_SECONDS = 2 * 3600
OOM_EXIT = 137


@dataclass
class ReportRun:
    """What the API tells about a run while it goes and once it ended."""

    run: str
    project: str
    source: str
    parameters: dict
    requested_by: str
    title: str
    status: str = "starting"  # starting, running, ok, failed
    cell: int = 0
    cells: int = 0
    current: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    error: dict | None = None
    outputs: list = field(default_factory=list)
    durations: dict = field(default_factory=dict)  # seconds of the runner's steps

    @property
    def folder(self) -> str:
        return f"outputs/reports/{self.run}"

    def model(self) -> dict:
        return {**asdict(self), "folder": self.folder}


def container_name(project: str, run: str) -> str:
    return f"hds-{naming.validate_slug(project)}.report-{run}"


def mounts(volumes: dict[str, str], templates: Path = TEMPLATES_DIR) -> tuple[dict, dict]:
    """({source: path} read-write, {source: path} read-only)."""
    read_write = {volumes["outputs"]: f"{containers.HOME}/outputs"}
    read_only = {
        volumes["data"]: f"{containers.HOME}/data",
        volumes["work"]: f"{containers.HOME}/work",
        str(containers.GUARD_SOURCE): containers.GUARD_MOUNT,
        str(templates): TEMPLATES_MOUNT,
        str(NBCONVERT_SOURCE): NBCONVERT_MOUNT,
    }
    return read_write, read_only


def runner_spec(run: ReportRun, kit: str, image: str, image_id: str) -> dict:
    """What report_runner.py reads from HDSHUB_REPORT_SPEC."""
    source = run.source
    if source.startswith("work/"):
        notebook = f"{containers.HOME}/{source}"
        cwd = str(Path(notebook).parent)  # as in JupyterLab: the notebook's own folder
    else:
        notebook, cwd = f"{TEMPLATES_MOUNT}/{source}.ipynb", containers.HOME
    return {"run": run.run, "project": run.project, "source": source, "notebook": notebook,
            "cwd": cwd, "parameters": run.parameters, "requested_by": run.requested_by,
            "title": run.title, "kit": kit, "image": image, "image_id": image_id}


def create_container(client: docker.DockerClient, run: ReportRun, tier: dict, kit: str, image: str):
    volumes = project_resources.ensure_volumes(client.api, run.project)
    try:
        image_id = client.images.get(image).id
    except docker.errors.ImageNotFound:
        raise RuntimeError(f"image {image} of kit {kit} is missing: run 'hdshub images build'") from None
    read_write, read_only = mounts(volumes)
    spec = runner_spec(run, kit, image, image_id)
    return client.containers.create(
        image, ["python3", "-m", "hdshub_kit.report_runner"],
        name=container_name(run.project, run.run),
        user=containers.NOTEBOOK_UID, working_dir=containers.HOME,
        environment={
            **containers.thread_environment(tier),
            "PYTHONPATH": containers.GUARD_MOUNT, "HOME": containers.HOME,
            "JUPYTER_PATH": SHARE,
            # papermill writes the whole notebook after every cell, and nbformat validates it
            # each time: with fastjsonschema (an nbformat dependency) instead of jsonschema,
            # about 0.4 s less per report on a one-CPU tier.
            "NBFORMAT_VALIDATOR": "fastjsonschema",
            "HDSHUB_REPORT_SPEC": json.dumps(spec, ensure_ascii=False),
        },
        labels={**containers.labels(run.project, run.requested_by.split(" ")[0], PURPOSE),
                LABEL_RUN: run.run},
        network_mode="none",
        volumes=containers.binds(read_write, read_only),
        **containers.hardening(),
        **containers.limits(tier),
    )


def follow(container, run: ReportRun, time_limit: float = TIME_LIMIT_SECONDS) -> None:
    """Start the container and update `run` from its lines until it ends (a thread's work)."""
    result: dict | None = None
    errors: list[str] = []
    timer = threading.Timer(time_limit, lambda: _kill(container))
    timer.daemon = True
    container.start()
    timer.start()
    run.status = "running"
    try:
        pending = b""
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", errors="replace")
                if line.startswith(PROGRESS_MARKER):
                    progress = json.loads(line[len(PROGRESS_MARKER):])
                    run.cell, run.cells, run.current = progress["cell"], progress["cells"], progress["source"]
                elif line.startswith(RESULT_MARKER):
                    result = json.loads(line[len(RESULT_MARKER):])
                elif line.strip():
                    errors = (errors + [line])[-20:]
        exit_code = container.wait(timeout=60).get("StatusCode")
    finally:
        timer.cancel()
    timed_out = time.time() - run.started_at >= time_limit
    finish(run, result, exit_code, errors, timed_out)


def running_elsewhere(client: docker.DockerClient, project: str) -> str | None:
    """The run still going in a report container this hub process did not start (it was
    started before the hub restarted), or None. Ended leftovers of such runs are removed:
    their runner wrote its outputs itself, there is nothing left to read from them."""
    found = None
    for container in client.containers.list(all=True, filters={
            "label": [f"{project_resources.LABEL_PROJECT}={project}", f"org.hdshub.purpose={PURPOSE}"]}):
        if container.status in ("running", "restarting", "paused"):  # "created": never started
            found = container.labels.get(LABEL_RUN, container.name)
        else:
            remove(container)
    return found


def _kill(container) -> None:
    try:
        container.kill()
    except docker.errors.APIError:
        pass  # it ended meanwhile


def finish(run: ReportRun, result: dict | None, exit_code: int | None, errors: list[str],
           timed_out: bool = False, failure: str | None = None) -> None:
    """Settle the run from the runner's result, or explain why there is none (`failure`: it
    could not start)."""
    run.finished_at = time.time()
    if result is not None:
        run.status = result["status"]
        run.error = result.get("error")
        run.outputs = result.get("outputs", [])
        run.durations = result.get("durations_s", {})
        return
    run.status = "failed"
    if failure:
        reason = {"fr": f"le rapport n'a pas pu démarrer : {failure}",
                  "en": f"the report could not start: {failure}"}
    elif timed_out:
        reason = {"fr": f"arrêté après {TIME_LIMIT_SECONDS // 3600} h, la durée maximale d'un rapport",
                  "en": f"stopped after {TIME_LIMIT_SECONDS // 3600} h, the longest a report may run"}
    elif exit_code == OOM_EXIT:
        reason = {"fr": "arrêté : la mémoire de l'offre du projet est épuisée",
                  "en": "stopped: the project tier's memory is exhausted"}
    else:
        reason = {"fr": f"le conteneur du rapport s'est arrêté (code {exit_code})",
                  "en": f"the report's container ended (exit {exit_code})"}
    run.error = {"stage": "container", **reason, "log": errors[-10:]}


def remove(container) -> None:
    try:
        container.remove(force=True)
    except docker.errors.APIError:  # gone already, or being removed by another request
        pass
