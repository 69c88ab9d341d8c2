"""One report run: a fresh one-off container of the project's kit, followed to its end.

The container is locked down like a project server (containers.hardening and the tier's
limits: non-root, no capability, read-only root, private IPC, memory, CPU and process caps)
and is even more closed: no network at all (a report reads files and writes files), raw data
and the work area read-only, only `outputs` writable. It runs
extensions/hdshub_kit/report_runner.py, whose lines say which cell is running; the last one
carries the provenance. The hub keeps the state of each run in memory (ReportRun) for the
API; the outputs and provenance.json in the project's `outputs/reports/<run>/` are the record,
and Docker is the truth on whether a run still goes (unfollowed).

Nothing the container prints is trusted on its own: the kernel runs under the runner's uid
and can write the same lines. A result counts only when the container's exit code agrees
with it and the files the hub itself hashes in `outputs` after the container ended are the
ones the result and provenance.json list (carry_out). The time limit is kept by the runner
(it stops itself at the deadline it is given) and, should it not, by whichever hub process
follows the container, counted from Docker's StartedAt: a hub restart loses neither.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

import docker
import docker.errors

from . import audit_log, containers, hardening, images, kit_environments, naming, project_resources
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
#: The runner stops itself at the limit; the hub kills the container only this much later,
#: so that the runner's own record of the stop comes first.
KILL_GRACE_SECONDS = 60
OOM_EXIT = 137
log = logging.getLogger("JupyterHub")
TIME_LIMIT_EXIT = 3  # extensions/hdshub_kit/report_runner.py, stopped at its deadline
#: The runner's exit codes that go with each status of its result.
EXIT_CODES = {"ok": {0}, "failed": {1, TIME_LIMIT_EXIT}}
#: provenance.json is parsed by the hub only up to this size (a runner's is a few kB).
MAX_PROVENANCE_BYTES = 4 * 1024 * 1024


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
    exit_code: int | None = None
    #: {file: sha256} of outputs/reports/<run>/ as the hub read it after the container ended.
    sha256: dict = field(default_factory=dict)
    #: Found in Docker, started by an earlier hub process (it restarted meanwhile).
    adopted: bool = False
    source_ip: str = ""

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


def runner_spec(run: ReportRun, kit: str, image: str, image_id: str, content_hash: str = "",
                time_limit: float = TIME_LIMIT_SECONDS, environment_volume: str = "") -> dict:
    """What report_runner.py reads from HDSHUB_REPORT_SPEC. `source_ip` is for the hub
    only: a later hub process records the run's end from it (adopted_run)."""
    source = run.source
    if source.startswith("work/"):
        notebook = f"{containers.HOME}/{source}"
        cwd = str(Path(notebook).parent)  # as in JupyterLab: the notebook's own folder
    else:
        notebook, cwd = f"{TEMPLATES_MOUNT}/{source}.ipynb", containers.HOME
    return {"run": run.run, "project": run.project, "source": source, "notebook": notebook,
            "cwd": cwd, "parameters": run.parameters, "requested_by": run.requested_by,
            "title": run.title, "kit": kit, "image": image, "image_id": image_id,
            "image_content_hash": content_hash, "environment_volume": environment_volume,
            "time_limit_seconds": int(time_limit),
            "source_ip": run.source_ip}


def create_container(client: docker.DockerClient, run: ReportRun, tier: dict, kit: str, image: str,
                     time_limit: float = TIME_LIMIT_SECONDS):
    volumes = project_resources.ensure_volumes(client.api, run.project)
    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound:
        raise RuntimeError(f"image {image} of kit {kit} is missing: run 'hdshub images build'") from None
    read_write, read_only = mounts(volumes)
    # The kit's packages from a volume: a fresh container reads them faster there
    # (kit_environments.py); it holds exactly this image's.
    environment = kit_environments.ensure(client, kit, found)
    if environment is not None:
        read_only[environment] = kit_environments.ENVIRONMENT_PATH
    spec = runner_spec(run, kit, image, found.id, (found.labels or {}).get(images.HASH_LABEL, ""), time_limit,
                       environment or "")
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


def parse_line(line: str) -> tuple[str, dict | None]:
    """("progress" | "result", its JSON object) for a marker line, ("log", None) for any
    other line, also a marker line whose JSON is broken or not an object: whoever wrote it,
    it cannot stop the run from being followed."""
    for kind, marker in (("progress", PROGRESS_MARKER), ("result", RESULT_MARKER)):
        if line.startswith(marker):
            try:
                payload = json.loads(line[len(marker):])
            except ValueError:
                return "log", None
            return (kind, payload) if isinstance(payload, dict) else ("log", None)
    return "log", None


def show_progress(run: ReportRun, progress: dict) -> None:
    cell, cells = progress.get("cell"), progress.get("cells")
    if isinstance(cell, int) and isinstance(cells, int) and 0 <= cell <= cells:
        run.cell, run.cells = cell, cells
        run.current = str(progress.get("source", ""))[:120]


def started_at(container) -> float:
    """When Docker started the container (epoch seconds), whoever started it."""
    text = container.attrs["State"].get("StartedAt") or ""
    if text.startswith("0001-"):  # never started
        return time.time()
    # Docker writes nanoseconds and a Z; Python reads microseconds and an offset.
    head, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}+00:00").timestamp()


def follow(container, run: ReportRun, time_limit: float = TIME_LIMIT_SECONDS, start: bool = True,
           grace: float = KILL_GRACE_SECONDS) -> tuple[dict | None, int | None, list[str], bool]:
    """Start the container (unless an earlier hub did) and update `run` from its lines until
    it ends: (the last result line, exit code, last log lines, killed at the time limit).
    The limit counts from Docker's StartedAt, so a container adopted after a hub restart is
    held to the limit it had from its start, and one already past it is killed at once."""
    result: dict | None = None
    errors: list[str] = []
    if start:
        container.start()
    container.reload()
    run.started_at = started_at(container)
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        _kill(container)

    timer = threading.Timer(max(0.0, run.started_at + time_limit + grace - time.time()), kill)
    timer.daemon = True
    timer.start()
    run.status = "running"
    try:
        pending = b""
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", errors="replace")
                kind, payload = parse_line(line)
                if kind == "progress":
                    show_progress(run, payload)
                elif kind == "result":
                    result = payload  # the last one: the runner prints its own last
                elif line.strip():
                    errors = (errors + [line[:2000]])[-20:]
        exit_code = container.wait(timeout=60).get("StatusCode")
    finally:
        timer.cancel()
    return result, exit_code, errors, killed.is_set()


def unfollowed(client: docker.DockerClient, project: str, followed: set[str]) -> list:
    """The project's report containers no run of `followed` (run names) stands for: started
    by a hub process before this one, running or ended. Never-started leftovers (a hub
    stopped between create and start) are removed: nothing ran."""
    found = []
    for container in client.containers.list(all=True, ignore_removed=True, filters={  # one may end meanwhile
            "label": [f"{project_resources.LABEL_PROJECT}={project}", f"org.hdshub.purpose={PURPOSE}"]}):
        if container.labels.get(LABEL_RUN, container.name) in followed:
            continue
        if container.status == "created":
            remove(container)
        else:
            found.append(container)
    return found


#: Docker's states of a container still at work; any other ("exited", "dead", "removing") has ended.
RUNNING_STATES = frozenset({"created", "running", "paused", "restarting"})


def container_state(client: docker.DockerClient, project: str, run: str) -> str | None:
    """Docker's status of a run's container ("running", "exited"...), None: there is none."""
    try:
        return client.containers.get(container_name(project, run)).status
    except docker.errors.NotFound:
        return None


def adopted_run(container) -> ReportRun:
    """The run a container found in Docker stands for, from the spec it was given (a
    container without one, not made by this hub, still counts as a run of its project)."""
    environment = dict(item.split("=", 1) for item in container.attrs["Config"].get("Env") or [] if "=" in item)
    try:
        spec = json.loads(environment.get("HDSHUB_REPORT_SPEC", "{}"))
        assert isinstance(spec, dict)
    except (ValueError, AssertionError):
        spec = {}
    labels = container.labels
    parameters = spec.get("parameters")
    return ReportRun(
        run=labels.get(LABEL_RUN, container.name), project=labels[project_resources.LABEL_PROJECT],
        source=str(spec.get("source") or "?"), parameters=parameters if isinstance(parameters, dict) else {},
        requested_by=str(spec.get("requested_by") or labels.get("org.hdshub.user", "?")),
        title=str(spec.get("title") or ""), started_at=started_at(container), adopted=True,
        source_ip=str(spec.get("source_ip") or ""))


def folder_digests(container, path: str) -> tuple[dict[str, str], bytes | None]:
    """({file: sha256} of the regular files of `path` in an ended run's container, the bytes
    of its provenance.json or None), read by the hub through Docker's archive of the folder
    (the volume itself, mounted by the engine for the copy; the container runs nothing any
    more). Streamed: an output of any size is hashed without being held in memory."""
    found: dict[str, str] = {}
    provenance = None
    try:
        stream, _ = container.get_archive(path)
    except docker.errors.NotFound:
        return {}, None
    with tarfile.open(fileobj=_ChunkReader(stream), mode="r|") as tar:
        for member in tar:
            name = member.name.split("/", 1)[1] if "/" in member.name else ""
            if not member.isfile() or not name or "/" in name:
                continue
            digest, content = hashlib.sha256(), bytearray()
            source = tar.extractfile(member)
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
                if name == "provenance.json" and len(content) <= MAX_PROVENANCE_BYTES:
                    content += block
            found[name] = digest.hexdigest()
            if name == "provenance.json" and len(content) <= MAX_PROVENANCE_BYTES:
                provenance = bytes(content)
    return found, provenance


class _ChunkReader:
    """A file-like reader over Docker's archive chunks, for tarfile's streaming mode."""

    def __init__(self, chunks):
        self.chunks, self.buffer = iter(chunks), b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
        if size < 0:
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def carry_out(client: docker.DockerClient, run: ReportRun, tier: dict | None = None, kit: str = "",
              image: str = "", container=None, time_limit: float = TIME_LIMIT_SECONDS,
              grace: float = KILL_GRACE_SECONDS) -> ReportRun:
    """A whole run, blocking (a thread's work): create and start its container, or follow
    the one an earlier hub process started (`container`), to its end; hash what it left in
    outputs; remove the container. `run` shows the progress; the ended run, with its status
    whatever happened, is returned as a copy, for the caller to record before anyone sees it
    ended."""
    ended = replace(run)
    try:
        if container is None:
            container = create_container(client, run, tier, kit, image, time_limit)
            outcome = follow(container, run, time_limit, grace=grace)
        else:
            outcome = follow(container, run, time_limit, start=False, grace=grace)
        log.info("hdshub: report %s/%s: its container ended (exit code %s), reading its folder",
                 run.project, run.run, outcome[1])
        # From the ended container itself: a utility container to read the volume would
        # cost a create and a removal more (about 0.3 s here).
        digests, provenance = folder_digests(container, f"{containers.HOME}/outputs/reports/{run.run}")
        ended = replace(run)
        finish(ended, *outcome, digests=digests, provenance=provenance)
    except Exception as error:
        log.exception("hdshub: report %s/%s could not run", run.project, run.run)
        ended = replace(run)
        finish(ended, None, None, [], failure=str(error))
    finally:
        if container is not None:
            remove(container)
    return ended


def end_event(run: ReportRun) -> dict:
    """The `report-run` audit event of an ended run (usage_report.py counts the `ok` ones)."""
    return {"time": audit_log.utc_now(), "user": run.requested_by, "action": "report-run",
            "target": run.folder, "outcome": "ok" if run.status == "ok" else "failed",
            "source_ip": run.source_ip, "details": {
                "source": run.source, "exit_code": run.exit_code, "adopted": run.adopted,
                "started_at": run.started_at, **digest_details(run.sha256)}}


def digest_details(digests: dict[str, str]) -> dict:
    """What the hub found in a run's folder once its container had ended, as audit details
    (flat values): provenance.json's sha256, and every output's as `sha256sum` prints them
    (`sha256sum -c` in the folder checks them), or, beyond what an audit detail holds, the
    number of outputs and the sha256 of that listing."""
    outputs = sorted((name, sha) for name, sha in digests.items() if name != "provenance.json")
    listing = "".join(f"{sha}  {name.replace(chr(10), '?')}\n" for name, sha in outputs)
    details = {"provenance_sha256": digests.get("provenance.json"), "outputs_count": len(outputs),
               "outputs_listing_sha256": hashlib.sha256(listing.encode()).hexdigest()}
    if len(listing) <= audit_log.MAX_DETAIL_STRING:
        details["outputs_sha256"] = listing
    return details


def _kill(container) -> None:
    try:
        container.kill()
    except docker.errors.APIError:
        pass  # it ended meanwhile


def trusted_result(result: dict | None, exit_code: int | None, digests: dict[str, str] | None,
                   provenance: bytes | None) -> tuple[dict | None, str | None]:
    """(the result, None) when it can be believed, else (None, why not, in English). A
    result line any process of the container could have printed counts only if the
    container's exit code goes with its status and, once the hub has read the run's folder
    (`digests`), provenance.json there says the same and every output it lists is there with
    that sha256."""
    if result is None:
        return None, None
    status = result.get("status")
    if exit_code not in EXIT_CODES.get(status, set()):
        return None, f"the result says {status!r} but the container exited with code {exit_code}"
    if digests is None:
        return result, None
    try:
        recorded = json.loads(provenance) if provenance is not None else None
    except ValueError:
        recorded = None
    if not isinstance(recorded, dict):
        return None, "provenance.json is missing or unreadable in the run's folder"
    listed = {o.get("file"): o.get("sha256") for o in result.get("outputs") or [] if isinstance(o, dict)}
    if recorded.get("status") != status or recorded.get("outputs") != result.get("outputs"):
        return None, "provenance.json does not say what the result says"
    if listed != {name: sha for name, sha in digests.items() if name != "provenance.json"}:
        return None, "the files in the run's folder are not those the result lists"
    return result, None


def finish(run: ReportRun, result: dict | None, exit_code: int | None, errors: list[str],
           timed_out: bool = False, failure: str | None = None, digests: dict[str, str] | None = None,
           provenance: bytes | None = None) -> None:
    """Settle the run from the runner's result once trusted_result believes it, or explain
    why there is none (`failure`: it could not start)."""
    run.finished_at = time.time()
    run.exit_code = exit_code
    run.sha256 = dict(digests or {})
    result, distrust = trusted_result(result, exit_code, digests, provenance)
    if result is not None and not timed_out:
        run.status = "ok" if result.get("status") == "ok" else "failed"
        error = result.get("error")
        run.error = error if isinstance(error, dict) or error is None else {"stage": "execute", "evalue": str(error)}
        outputs = result.get("outputs")
        run.outputs = outputs if isinstance(outputs, list) else []
        durations = result.get("durations_s")
        run.durations = durations if isinstance(durations, dict) else {}
        return
    run.status = "failed"
    if failure:
        reason = {"fr": f"le rapport n'a pas pu démarrer : {failure}",
                  "en": f"the report could not start: {failure}"}
    elif timed_out:
        reason = {"fr": f"arrêté après {TIME_LIMIT_SECONDS // 3600} h, la durée maximale d'un rapport",
                  "en": f"stopped after {TIME_LIMIT_SECONDS // 3600} h, the longest a report may run"}
    elif distrust:
        reason = {"fr": f"résultat du rapport non retenu : {distrust} ; vérifiez le dossier "
                        f"{run.folder} avant tout usage",
                  "en": f"the report's result was not accepted: {distrust}; check folder "
                        f"{run.folder} before using it"}
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
