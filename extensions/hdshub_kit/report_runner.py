"""Run one study report inside its one-off container: `python3 -m hdshub_kit.report_runner`.

The hub (hub_config/hdshub/report_runs.py) starts a fresh container of the project's kit for
each run, hardened like a project server, with no network at all, the raw data and the work
area read-only and only `outputs` writable, and gives this module the run in the environment
variable HDSHUB_REPORT_SPEC (JSON, parameters already validated by the hub). Here:

1. papermill executes the notebook with the parameters; a line per cell tells the hub how far
   it got (PROGRESS_MARKER, JSON);
2. the executed notebook becomes an HTML report with the code hidden (the nbconvert template
   `hdshub-report`, templates/nbconvert/) and a PDF of the same page (WeasyPrint, which may
   fetch nothing but the images embedded in the page);
3. provenance.json records what a reviewer needs to judge and redo the run: image and package
   versions, parameters, the sha256 of every raw-data file and of every output, start, end,
   status, and on failure the failing cell;
4. everything is written into `outputs/reports/.partial-<run>/`, which becomes
   `outputs/reports/<run>/` in one rename: a reader never sees half a report. The next run
   settles the partial folder of a run that was killed (settle_interrupted).

A failing notebook still yields its partial executed notebook and the provenance (status
"failed", with the cell), no HTML or PDF. The last line on standard output is RESULT_MARKER
followed by the provenance. Exit status: 0 done, 1 the notebook failed, 2 the run could not
be made at all, 3 stopped at the time limit.

The time limit (the spec's time_limit_seconds) is kept here, in the container, so that no
restart of the hub can lose it: at the deadline the runner records what the run had done
(provenance "failed", stage "time-limit"), puts the folder in place and exits; as the
container's PID 1 its exit ends every process of the run, the kernel's included, and those
cannot signal it (a process of the namespace cannot signal its init). The hub kills the
container a minute later should the runner not have stopped by then.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import sysconfig
import threading
import time
from pathlib import Path

HOME = Path("/home/jovyan")
DATA_DIR = HOME / "data"
REPORTS_DIR = HOME / "outputs" / "reports"
TEMPLATE_NAME = "hdshub-report"
PROGRESS_MARKER = "HDSHUB-REPORT-PROGRESS "
RESULT_MARKER = "HDSHUB-REPORT-RESULT "
SPEC_VARIABLE = "HDSHUB_REPORT_SPEC"
#: Written last into a kit environment volume (kit_environments.READY_FILE on the hub side).
ENVIRONMENT_READY_FILE = ".hdshub-environment-ready"
EXIT_OK, EXIT_FAILED, EXIT_TIME_LIMIT = 0, 1, 3
#: Longest a running report goes without its executed notebook written (throttle_saves).
SAVE_SECONDS = 5.0
MATPLOTLIB_PREBUILT = Path("/opt/hdshub/matplotlib")
#: R's libraries in the r-stats kit (Debian's layout), in .libPaths() order.
R_LIBRARIES = ("/usr/local/lib/R/site-library", "/usr/lib/R/site-library", "/usr/lib/R/library")


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_files(root: Path = DATA_DIR) -> list[dict]:
    """Every regular file of the raw data, with its size and sha256 (links are not followed:
    the data steward's import makes none)."""
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                files.append({"path": str(path.relative_to(HOME)), "size": path.stat().st_size,
                              "sha256": sha256_of(path)})
    return files


def python_packages() -> dict[str, str]:
    """{name: version} of the kit's Python packages, read from the names of their
    `<name>-<version>.dist-info` folders: the same facts as importlib.metadata, without
    parsing two hundred METADATA files (a quarter of a second of a one-CPU tier)."""
    folders = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    return dict(sorted(folder.name[:-len(".dist-info")].split("-", 1)
                       for root in folders for folder in Path(root).glob("*-*.dist-info")))


def r_packages(libraries: tuple[str, ...] = R_LIBRARIES) -> dict[str, str]:
    """{"R": version, package: version} when the kit has R (r-stats), read from each
    package's DESCRIPTION; starting R to ask it would cost a second. The first library
    holding a package wins, as in R's .libPaths() order."""
    found: dict[str, str] = {}
    for library in libraries:
        for description in sorted(Path(library).glob("*/DESCRIPTION")):
            fields = dict(line.split(": ", 1) for line in description.read_text(errors="replace").splitlines()
                          if ": " in line and not line.startswith((" ", "\t")))
            if "Package" in fields and "Version" in fields:
                found.setdefault(fields["Package"], fields["Version"])
    if "base" in found:  # R's own version is its base package's
        found = {"R": found["base"], **found}
    return found


def emit(marker: str, payload: dict) -> None:
    print(marker + json.dumps(payload, ensure_ascii=False), flush=True)


def first_line(source: str, limit: int) -> str:
    return next((line for line in (source or "").splitlines() if line.strip()), "")[:limit]


def follow_cells(current: dict) -> None:
    """One PROGRESS_MARKER line as each cell starts, and `current` says which cell runs.
    papermill calls its execution manager's cell_start for every cell; wrapping it is the
    one hook papermill offers that knows both the cell's index and the notebook's length."""
    from papermill.engines import NotebookExecutionManager

    started = NotebookExecutionManager.cell_start

    def cell_start(self, cell, cell_index=None, **kwargs):
        current.update(cell=(cell_index or 0) + 1, source=first_line(cell.source, 200))
        emit(PROGRESS_MARKER, {"cell": current["cell"], "cells": len(self.nb.cells),
                               "source": current["source"][:120]})
        return started(self, cell, cell_index=cell_index, **kwargs)

    NotebookExecutionManager.cell_start = cell_start


def throttle_saves(interval: float = SAVE_SECONDS, manager=None) -> None:
    """papermill writes the whole notebook, validated, as every cell starts and as it ends:
    twice a cell, most of it for nothing on a short report. Here it is written at the start,
    then at most every `interval` seconds while cells run, and always at the end (papermill's
    notebook_complete, reached after a failing cell too). A run stopped at its time limit
    keeps a notebook at most that old. (`manager`: papermill's NotebookExecutionManager.)"""
    if manager is None:
        from papermill.engines import NotebookExecutionManager as manager

    save, complete = manager.save, manager.notebook_complete
    last = {"at": None}

    def throttled(self, **kwargs):
        now = time.monotonic()
        if last["at"] is None or now - last["at"] >= interval or getattr(self, "hdshub_ending", False):
            last["at"] = now
            return save(self, **kwargs)
        return None

    def notebook_complete(self, **kwargs):
        self.hdshub_ending = True
        return complete(self, **kwargs)

    manager.save = throttled
    manager.notebook_complete = notebook_complete


def failure_of(error, current: dict) -> dict:
    """The failing cell, as a reader of the executed notebook finds it (numbered from 1,
    papermill's parameters cell included)."""
    import papermill

    if isinstance(error, papermill.PapermillExecutionError):
        return {"stage": "execute", "cell": (error.cell_index or 0) + 1,
                "execution_count": error.exec_count, "ename": error.ename,
                "evalue": str(error.evalue)[:2000], "source": first_line(error.source, 200)}
    # The kernel died (most often the tier's memory limit) or did not start.
    return {"stage": "execute", "cell": current.get("cell"), "execution_count": None,
            "ename": type(error).__name__, "evalue": str(error)[:2000],
            "source": current.get("source", "")}


def seed_font_cache(prebuilt: Path = MATPLOTLIB_PREBUILT, home: Path = HOME) -> None:
    """Give matplotlib the font list the kit image built (images/python-stats/Dockerfile):
    the container's home is new and empty, and rebuilding it costs ~1.7 s at the first plot."""
    cache = home / ".cache" / "matplotlib"
    for fontlist in prebuilt.glob("fontlist-*.json"):
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fontlist, cache / fontlist.name)


def in_background(packages: dict) -> threading.Thread:
    """While the kernel starts and the notebook runs (the runner only waits on it then):
    list the installed packages for the provenance, and import nbconvert and WeasyPrint
    (about 1.5 s of CPU) for the rendering after."""
    def work():
        packages.update(python=python_packages(), r=r_packages())
        import nbconvert  # noqa: F401
        import weasyprint  # noqa: F401

    thread = threading.Thread(target=work, name="report-background", daemon=True)
    thread.start()
    return thread


def render(executed: Path, html_path: Path, pdf_path: Path, header: dict) -> None:
    """HTML with the code hidden (our nbconvert template), then the PDF of that page."""
    import nbformat
    import weasyprint
    import weasyprint.urls
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name=TEMPLATE_NAME, exclude_input=True,
                            exclude_input_prompt=True, exclude_output_prompt=True,
                            language_code=header["language"])
    notebook = nbformat.read(executed, as_version=4)
    html, _ = exporter.from_notebook_node(notebook, resources={"hdshub": header})
    html_path.write_text(html, encoding="utf-8")
    # The page's own embedded images (data: URLs) only: never a file of the container.
    fetcher = weasyprint.urls.URLFetcher(allowed_protocols={"data"})
    weasyprint.HTML(string=html, url_fetcher=fetcher).write_pdf(pdf_path)


def outputs_of(folder: Path) -> list[dict]:
    return [{"file": path.name, "size": path.stat().st_size, "sha256": sha256_of(path)}
            for path in sorted(folder.iterdir()) if path.is_file()]


def r_string(text: str) -> str:
    """An R string literal of `text`. papermill's R translator escapes with Python's
    unicode_escape, whose `\\xe9` R reads as the single byte 0xE9, not as « é »: every
    character outside printable ASCII is written as \\U{code point} here instead."""
    return '"' + "".join(
        "\\" + ch if ch in '"\\' else ch if " " <= ch <= "~" else f"\\U{{{ord(ch):x}}}"
        for ch in text) + '"'


def register_r_translator() -> None:
    """papermill's R translator, strings written by r_string (and so in lists and
    mappings too, which it translates through translate_str)."""
    from papermill.translators import RTranslator, papermill_translators

    class UnicodeRTranslator(RTranslator):
        @classmethod
        def translate_str(cls, val):
            return r_string(val)

    papermill_translators.register("R", UnicodeRTranslator)


class Deadline:
    """At `seconds` after it starts, `on_deadline()` runs once, unless the run finished
    first (finishing() returned True). The lock makes the two exclusive: a run records its
    end, or the deadline does, never both."""

    def __init__(self, seconds: float, on_deadline):
        self.lock = threading.Lock()
        self.settled = False
        self.on_deadline = on_deadline
        self.timer = threading.Timer(max(0.0, seconds), self._fire)
        self.timer.daemon = True

    def start(self) -> "Deadline":
        self.timer.start()
        return self

    def finishing(self) -> bool:
        """Claim the end for the run; False when the deadline took it."""
        with self.lock:
            if self.settled:
                return False
            self.settled = True
        self.timer.cancel()
        return True

    def _fire(self) -> None:
        with self.lock:
            if self.settled:
                return
            self.settled = True
        self.on_deadline()


def settle_interrupted(reports_dir: Path = REPORTS_DIR) -> list[str]:
    """Turn each `.partial-<run>` left by a run that died (stopped at the time limit, its
    container removed) into `<run>/`, keeping what it had (often the partly executed
    notebook) beside a provenance.json saying it was interrupted. The hub runs one report at
    a time per project and checks Docker first (report_runs.unfollowed), so a
    partial folder met here belongs to no living run."""
    settled = []
    for partial in sorted(reports_dir.glob(".partial-*")):
        name = partial.name[len(".partial-"):]
        if not partial.is_dir() or (reports_dir / name).exists():
            continue
        provenance = partial / "provenance.json"
        if not provenance.exists():
            provenance.write_text(json.dumps({
                "run": name, "status": "interrupted", "settled_at": utc_now(),
                "error": {"stage": "container",
                          "fr": "le rapport a été arrêté avant sa fin (durée maximale, ou conteneur arrêté)",
                          "en": "the report was stopped before its end (time limit, or container stopped)"},
                "outputs": outputs_of(partial)}, indent=2, ensure_ascii=False), encoding="utf-8")
        partial.rename(reports_dir / name)
        settled.append(name)
    return settled


def run(spec: dict) -> tuple[dict, int]:
    # papermill's I/O module tries each optional storage back-end at import; with pyarrow in
    # the kit it loads pyarrow's HDFS client (a quarter of a second of CPU). A run has no
    # network and reads only local files: papermill then treats hdfs:// as not installed.
    sys.modules.setdefault("pyarrow.fs", None)
    import papermill

    register_r_translator()
    packages: dict = {}
    background = in_background(packages)
    seed_font_cache()
    clock = time.monotonic()
    started = utc_now()
    name = spec["run"]
    for interrupted in settle_interrupted():
        print(f"hdshub report: outputs/reports/{interrupted}/ holds what an interrupted run left", file=sys.stderr)
    staging = REPORTS_DIR / f".partial-{name}"
    staging.mkdir(parents=True, mode=0o770)
    notebook = Path(spec["notebook"])
    provenance = {
        "run": name, "project": spec["project"], "source": spec["source"],
        "source_sha256": sha256_of(notebook), "parameters": spec["parameters"],
        "requested_by": spec["requested_by"], "kit": spec["kit"], "image": spec["image"],
        "image_id": spec["image_id"], "image_content_hash": spec.get("image_content_hash", ""),
        "environment_volume": spec.get("environment_volume", ""),
        "started_at": started,
        "data": data_files(), "packages": packages,  # filled in the background
    }
    limit = float(spec.get("time_limit_seconds") or 0)

    def stop_at_deadline() -> None:
        hours = f"{limit / 3600:g} h" if limit >= 3600 else f"{limit:g} s"
        provenance.update(status="failed", exit_code=EXIT_TIME_LIMIT, finished_at=utc_now(), error={
            "stage": "time-limit", "cell": current.get("cell"), "source": current.get("source", ""),
            "fr": f"arrêté après {hours}, la durée maximale d'un rapport (cellule {current.get('cell')})",
            "en": f"stopped after {hours}, the longest a report may run (cell {current.get('cell')})"})
        finalize(staging, name, provenance)
        emit(RESULT_MARKER, provenance)
        sys.stdout.flush()
        os._exit(EXIT_TIME_LIMIT)  # PID 1: the kernel and everything else end with it

    current: dict = {}
    deadline = Deadline(limit - (time.monotonic() - clock), stop_at_deadline)
    if limit > 0:
        deadline.start()
    durations = {"prepare": time.monotonic() - clock}
    executed = staging / f"{name}.ipynb"
    follow_cells(current)
    throttle_saves()
    error = None
    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters=spec["parameters"], progress_bar=False,
            cwd=spec["cwd"], kernel_name=None)
    except Exception as failure:  # the notebook's own error, or its kernel's death
        error = failure_of(failure, current)
    durations["execute"] = time.monotonic() - clock - durations["prepare"]
    background.join()
    if error is None:
        header = {"title": spec["title"], "project": spec["project"], "run": name,
                  "parameters": spec["parameters"], "started_at": started,
                  "image": spec["image"], "data": provenance["data"],
                  "language": spec["parameters"].get("language", "fr")}
        try:
            render(executed, staging / f"{name}.html", staging / f"{name}.pdf", header)
        except Exception as failure:
            for partial in (staging / f"{name}.html", staging / f"{name}.pdf"):
                partial.unlink(missing_ok=True)
            error = {"stage": "render", "ename": type(failure).__name__, "evalue": str(failure)[:2000]}
        durations["render"] = time.monotonic() - clock - durations["prepare"] - durations["execute"]
    status = "ok" if error is None else "failed"
    if not deadline.finishing():  # the deadline is recording the run and ending the process
        threading.Event().wait()
    provenance.update(status=status, error=error, finished_at=utc_now(),
                      exit_code=EXIT_OK if status == "ok" else EXIT_FAILED,
                      durations_s={step: round(seconds, 3) for step, seconds in durations.items()})
    finalize(staging, name, provenance)
    return provenance, provenance["exit_code"]


def finalize(staging: Path, name: str, provenance: dict) -> None:
    """provenance.json with the list of outputs beside them, then the folder in place."""
    provenance["outputs"] = outputs_of(staging)
    (staging / "provenance.json").write_text(json.dumps(provenance, indent=2, ensure_ascii=False),
                                             encoding="utf-8")
    staging.rename(REPORTS_DIR / name)


def environment_ready(spec: dict, prefix: Path = Path(sys.prefix)) -> bool:
    """The kit environment the hub mounted from a volume (hub_config/hdshub/kit_environments.py)
    is a whole copy: the hub writes ENVIRONMENT_READY_FILE last. True without such a volume."""
    return not spec.get("environment_volume") or (prefix / ENVIRONMENT_READY_FILE).is_file()


def main() -> int:
    try:
        spec = json.loads(os.environ[SPEC_VARIABLE])
    except (KeyError, ValueError) as error:
        print(f"hdshub report: no valid run in {SPEC_VARIABLE} ({error!r})", file=sys.stderr)
        return 2
    if not environment_ready(spec):
        print(f"hdshub report: the kit environment volume {spec['environment_volume']} is an incomplete "
              "copy; remove it and the hub copies it again", file=sys.stderr)
        return 2
    provenance, status = run(spec)
    emit(RESULT_MARKER, provenance)
    return status


if __name__ == "__main__":
    code = main()
    # Everything is written and renamed into place, the kernel is shut down: skip the
    # interpreter's teardown of pandas, nbconvert and WeasyPrint (over half a second of a
    # one-CPU tier, every run).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
