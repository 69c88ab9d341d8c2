"""Study reports without Docker: what may run, with which parameters, in which container.

The real thing (templates run in kit containers, PDF rendered, failing notebook, hostile
parameters through the hub, provenance hashes) is tests/integration/test_reports.py.
"""

from __future__ import annotations

import json
from argparse import Namespace

import pytest

from hdshub import hardening, images, kit_environments, report_cli, report_runs, reports
from hdshub_kit import report_runner
from hdshub.cli import build_parser


def notebook(parameters_source: str, **metadata) -> dict:
    return {"metadata": metadata, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "# Study"},
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": parameters_source},
    ]}


# -- parameters -------------------------------------------------------------------------------

def test_declared_parameters_are_the_assignments_of_the_parameters_cell():
    declared = reports.declared_parameters(notebook(
        'n = 10\nratio: float = 0.5\nname = "x"\ncolumns = ["a", "b"]\nstart = compute()\nx, y = 1, 2\n'))
    assert declared == {"n": 10, "ratio": 0.5, "name": "x", "columns": ["a", "b"], "start": ...}


def test_an_r_parameters_cell_gives_its_names():
    declared = reports.declared_parameters(notebook('alpha <- 0.05\ngroup = "treatment"\n# note <- 1\n',
                                                    kernelspec={"name": "ir", "language": "R"}))
    assert set(declared) == {"alpha", "group"}


def test_a_notebook_without_parameters_cell_is_refused_with_the_fix():
    with pytest.raises(reports.ReportError) as refused:
        reports.declared_parameters({"cells": [{"cell_type": "code", "metadata": {}, "source": "n = 1"}]})
    assert refused.value.status == 400 and "parameters" in refused.value.en and "parameters" in refused.value.fr


@pytest.mark.parametrize("given, problem", [
    ({"unknown": 1}, "unknown parameter 'unknown'"),
    ({"n = 1\nimport os; os.system('id')  #": 1}, "is not a parameter name"),
    ({"__import__": 1}, "unknown parameter"),
    ({"n": float("nan")}, "not a finite number"),
    ({"n": "10"}, "n expects number"),
    ({"columns": "a"}, "columns expects list"),
    ({"columns": [{1, 2}]}, "set"),
    ({"name": {"k": object()}}, "object"),
])
def test_hostile_or_wrong_parameters_are_refused_naming_the_parameter(given, problem):
    declared = {"n": 10, "columns": ["a"], "name": "x"}
    with pytest.raises(reports.ReportError) as refused:
        reports.validate_parameters(declared, given)
    assert problem in refused.value.en
    assert "n, columns, name" in refused.value.en and "Paramètres refusés" in refused.value.fr


def test_plain_json_parameters_of_the_right_kind_pass():
    declared = {"n": 10, "ratio": 0.5, "columns": ["a"], "flag": True, "anything": ..., "nothing": None}
    given = {"n": 12.5, "ratio": 1, "columns": [], "flag": False, "anything": {"a": [1, None]}, "nothing": "x"}
    assert reports.validate_parameters(declared, given) == given


def test_parameters_are_capped_in_size():
    with pytest.raises(reports.ReportError, match="exceed"):
        reports.validate_parameters({"text": ""}, {"text": "x" * (reports.MAX_PARAMETERS_BYTES + 1)})


# -- what runs --------------------------------------------------------------------------------

def test_sources_are_a_work_notebook_or_a_shipped_template():
    assert reports.parse_source("survival") == reports.Source("survival", template="survival")
    work = reports.parse_source("work/études/cohorte.ipynb")
    assert work.work_path == "études/cohorte.ipynb" and work.stem == "cohorte"
    for bad in ("work/../data/x.ipynb", "work//etc/passwd.ipynb", "/etc/passwd.ipynb", "nonsense"):
        with pytest.raises(reports.ReportError):
            reports.parse_source(bad)


@pytest.mark.parametrize("name", ["descriptive", "comparison", "survival"])
def test_each_shipped_template_declares_language_and_data_and_its_kit(name):
    template = json.loads(reports.templates()[name].read_text(encoding="utf-8"))
    declared = reports.declared_parameters(template)
    assert declared["language"] == "fr" and declared["data_file"] == "cohorte_synthetique.csv"
    assert declared["min_count"] == 10
    assert reports.template_kits(template) == ["python-stats"]
    assert reports.title_of(template, reports.Source(name, template=name), "en") != \
        reports.title_of(template, reports.Source(name, template=name), "fr")
    assert reports.validate_parameters(declared, {"language": "en"}) == {"language": "en"}


def test_run_names_sort_by_time_and_are_safe_folder_names():
    name = reports.run_name(reports.Source("work/Étude finale.ipynb", work_path="Étude finale.ipynb"))
    assert reports.RUN_NAME.fullmatch(name) and name.startswith("tude-finale-")


# -- the CLI's parameters ---------------------------------------------------------------------

def test_cli_values_are_json_when_they_parse_as_json_else_text(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("group_column: sex\ncovariates: [age]\nmin_count: 5\n", encoding="utf-8")
    parameters = report_cli.read_parameters(file, [["min_count", "11"], ["language", "en"],
                                                   ["covariates", '["age", "bmi"]']])
    assert parameters == {"group_column": "sex", "covariates": ["age", "bmi"], "min_count": 11, "language": "en"}


@pytest.mark.parametrize("content, problem", [
    ("start: 2026-01-01\n", "start: date"),
    ("- a\n- b\n", "expected a mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_a_bad_parameters_file_is_refused_before_the_hub_is_asked(tmp_path, content, problem):
    file = tmp_path / "params.yaml"
    file.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=problem):
        report_cli.read_parameters(file, [])


def test_report_run_command_line():
    args = build_parser().parse_args(["report", "run", "demo", "survival", "-p", "language", "en",
                                      "-p", "covariates", "[]", "-f", "p.yaml"])
    assert (args.slug, args.notebook, args.parameter) == ("demo", "survival", [["language", "en"], ["covariates", "[]"]])


def test_the_failing_cell_and_the_partial_notebook_are_named():
    run = {"run": "x-1", "folder": "outputs/reports/x-1", "error": {
        "stage": "execute", "cell": 4, "source": "model.fit(df)", "ename": "KeyError", "evalue": "'age'"}}
    text = report_cli.describe_error(run)
    assert "cell 4" in text and "model.fit(df)" in text and "KeyError: 'age'" in text
    assert "outputs/reports/x-1/x-1.ipynb" in text


# -- the container ----------------------------------------------------------------------------

def test_report_container_mounts_are_what_the_hardening_check_expects():
    read_write, read_only = report_runs.mounts({"data": "hds-p-data", "work": "hds-p-work", "outputs": "hds-p-outputs"})
    assert set(read_write.values()) == {p for p, rw in hardening.REPORT_MOUNTS.items() if rw}
    assert set(read_only.values()) == ({p for p, rw in hardening.REPORT_MOUNTS.items() if not rw}
                                       | hardening.REPORT_HOST_MOUNTS)
    assert read_only["hds-p-data"] == "/home/jovyan/data"


def report_attrs(environment: dict | None) -> dict:
    """`docker inspect` of a report container as create_container makes it."""
    read_write, read_only = report_runs.mounts({"data": "hds-p-data", "work": "hds-p-work", "outputs": "hds-p-outputs"})
    mounts = [{"Destination": path, "Name": source, "Source": source, "RW": True} for source, path in read_write.items()]
    mounts += [{"Destination": path, "Name": source, "Source": source, "RW": False} for source, path in read_only.items()]
    if environment is not None:
        mounts.append({"Destination": "/opt/hdshub/venv", **environment})
    return {"Name": "/hds-p-report-x", "Mounts": mounts, "Config": {
        "User": "1000:1000", "Env": [], "Labels": {"org.hdshub.purpose": hardening.REPORT_PURPOSE,
                                                    images.NAME_LABEL: "python-stats", images.HASH_LABEL: "ab" * 32}},
        "HostConfig": {"CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges:true"], "ReadonlyRootfs": True,
                       "Tmpfs": {"/tmp": "", "/home/jovyan": ""}, "Privileged": False, "PidMode": "",
                       "IpcMode": "private", "UsernsMode": "", "NetworkMode": "none", "Memory": 1,
                       "MemorySwap": 1, "CpuQuota": 1, "CpuPeriod": 1, "PidsLimit": 1}}


def test_a_report_reads_only_its_own_images_environment_volume_read_only():
    own = kit_environments.volume_name("python-stats", "ab" * 32)
    assert own == "hdshub-env-python-stats-abababababab"
    assert hardening.container_problems(report_attrs(None), "p", None) == []
    assert hardening.container_problems(report_attrs({"Name": own, "RW": False}), "p", None) == []
    other = kit_environments.volume_name("python-stats", "cd" * 32)
    for wrong in ({"Name": other, "RW": False}, {"Name": own, "RW": True}):
        (problem,) = hardening.container_problems(report_attrs(wrong), "p", None)
        assert "/opt/hdshub/venv" in problem and own in problem


def test_the_executed_notebook_is_written_at_the_start_now_and_then_and_always_at_the_end(monkeypatch):
    """papermill's two writes per cell, throttled: the first one and the last one always."""
    clock = {"now": 100.0}
    monkeypatch.setattr(report_runner.time, "monotonic", lambda: clock["now"])

    class Manager:  # papermill's NotebookExecutionManager, as far as saving goes
        def __init__(self):
            self.saved = []

        def save(self, **kwargs):
            self.saved.append(clock["now"])

        def notebook_complete(self, **kwargs):
            self.save()

    report_runner.throttle_saves(5.0, Manager)
    manager = Manager()
    for step in range(30):  # a cell starts or ends every 0.25 s
        manager.save()
        clock["now"] += 0.25
    manager.notebook_complete()  # 2.5 s after the last write: written because it is the end
    assert manager.saved == [100.0, 105.0, 107.5]


def test_the_runner_refuses_an_environment_volume_copied_only_in_part(tmp_path):
    spec = {"environment_volume": "hdshub-env-python-stats-abababababab"}
    assert not report_runner.environment_ready(spec, tmp_path)
    (tmp_path / report_runner.ENVIRONMENT_READY_FILE).touch()
    assert report_runner.environment_ready(spec, tmp_path)
    assert report_runner.environment_ready({"environment_volume": ""}, tmp_path / "absent")
    assert report_runner.ENVIRONMENT_READY_FILE == kit_environments.READY_FILE  # one format, two sides


def test_work_notebooks_run_in_their_folder_templates_in_home():
    run = report_runs.ReportRun("r-1", "p", "work/a/b.ipynb", {}, "alice", "T")
    spec = report_runs.runner_spec(run, "python-stats", "hdshub/python-stats:latest", "sha256:1")
    assert (spec["notebook"], spec["cwd"]) == ("/home/jovyan/work/a/b.ipynb", "/home/jovyan/work/a")
    run = report_runs.ReportRun("r-2", "p", "survival", {"language": "en"}, "alice", "T")
    spec = report_runs.runner_spec(run, "python-stats", "img", "sha256:1")
    assert (spec["notebook"], spec["cwd"]) == ("/opt/hdshub/share/reports/survival.ipynb", "/home/jovyan")


@pytest.mark.parametrize("result, exit_code, timed_out, status, words", [
    ({"status": "ok", "error": None, "outputs": [{"file": "a"}]}, 0, False, "ok", None),
    (None, 137, False, "failed", "memory"),
    (None, 137, True, "failed", "longest"),
    (None, 2, False, "failed", "exit 2"),
])
def test_a_run_ends_with_a_status_and_a_reason(result, exit_code, timed_out, status, words):
    run = report_runs.ReportRun("r", "p", "survival", {}, "alice", "T")
    report_runs.finish(run, result, exit_code, ["Traceback", "boom"], timed_out)
    assert run.status == status and run.finished_at is not None
    if words:
        assert words in run.error["en"] and run.error["fr"] and run.error["log"] == ["Traceback", "boom"]


def test_parsed_namespace_lists_runs():
    args = build_parser().parse_args(["report", "list", "demo"])
    assert isinstance(args, Namespace) and args.action == "list"


def test_provenance_lists_python_packages_as_installed():
    """The runner reads versions from dist-info folder names; they must say what
    importlib.metadata says, names compared in their normalised form."""
    import importlib.metadata
    import re

    def normal(name):
        return re.sub(r"[-_.]+", "_", name).lower()

    listed = {normal(name): version for name, version in report_runner.python_packages().items()}
    installed = {normal(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
                 if d.metadata["Name"]}
    assert listed["jupyterhub"] == installed["jupyterhub"]
    assert listed == {name: installed[name] for name in listed}


def test_provenance_lists_r_packages_first_library_wins(tmp_path):
    def describe(library, package, version):
        folder = tmp_path / library / package
        folder.mkdir(parents=True)
        (folder / "DESCRIPTION").write_text(
            f"Package: {package}\nTitle: A package: with a colon\nVersion: {version}\n"
            "Author: someone,\n    Version: 0.0 on a continuation line\n")

    describe("site", "survival", "3.5-3")
    describe("base-lib", "survival", "3.4-0")
    describe("base-lib", "base", "4.2.2")
    (tmp_path / "base-lib" / "broken").mkdir()
    (tmp_path / "base-lib" / "broken" / "DESCRIPTION").write_text("not a description\n")
    found = report_runner.r_packages((str(tmp_path / "site"), str(tmp_path / "base-lib"),
                                      str(tmp_path / "absent")))
    assert found == {"R": "4.2.2", "base": "4.2.2", "survival": "3.5-3"}
    assert report_runner.r_packages((str(tmp_path / "absent"),)) == {}


def test_the_next_run_settles_what_an_interrupted_run_left(tmp_path):
    dead = tmp_path / ".partial-2026-11-22-dead"
    dead.mkdir()
    (dead / "2026-11-22-dead.ipynb").write_text("{}")
    wrote_provenance = tmp_path / ".partial-2026-11-22-late"  # died between provenance and rename
    wrote_provenance.mkdir()
    (wrote_provenance / "provenance.json").write_text('{"status": "ok"}')
    taken = tmp_path / ".partial-2026-11-22-taken"  # a folder of that name exists: left alone
    taken.mkdir()
    (tmp_path / "2026-11-22-taken").mkdir()

    assert report_runner.settle_interrupted(tmp_path) == ["2026-11-22-dead", "2026-11-22-late"]
    provenance = json.loads((tmp_path / "2026-11-22-dead" / "provenance.json").read_text())
    assert provenance["status"] == "interrupted" and provenance["error"]["en"].startswith("the report was stopped")
    assert [o["file"] for o in provenance["outputs"]] == ["2026-11-22-dead.ipynb"]
    assert json.loads((tmp_path / "2026-11-22-late" / "provenance.json").read_text()) == {"status": "ok"}
    assert taken.exists() and not dead.exists()
    assert report_runner.settle_interrupted(tmp_path / "absent") == []


# -- review of issue 8: threads, trust, limits, policy ---------------------------------------

def test_a_run_is_followed_in_a_thread_of_its_own_not_the_shared_pool():
    """The hub's default pool is a handful of threads; a report run holds its follower for up
    to hours. With the pool full (here: its one thread waiting for the follower), the
    follower must still run."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from hdshub import report_hub

    follower_ran = threading.Event()

    async def scenario():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        blocked = loop.run_in_executor(None, follower_ran.wait, 30)
        await report_hub.in_own_thread(follower_ran.set)
        return await blocked

    assert asyncio.run(scenario()) is True


def test_an_error_in_the_own_thread_reaches_the_awaiting_coroutine():
    import asyncio

    from hdshub import report_hub

    def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        asyncio.run(report_hub.in_own_thread(boom))


def still_running_after_settling(monkeypatch, state: str | None, record_end) -> report_runs.ReportRun | None:
    """report_hub.running() once a request's settle_ended is done, Docker saying `state` of the
    run's container and the coroutine record_end(run) following the run. Docker's state is
    given: a removal cannot be held still in a real engine (the CI failure of stop 19 was one)."""
    import asyncio
    from types import SimpleNamespace

    from hdshub import report_hub

    run = report_runs.ReportRun(run="2026-12-06-run", project="proj-ab12cd", source="descriptive",
                                parameters={}, requested_by="ana", title="")
    monkeypatch.setattr(report_hub, "_runs", {run.project: {run.run: run}})
    monkeypatch.setattr(report_hub.docker, "from_env", lambda: None)
    monkeypatch.setattr(report_runs, "container_state", lambda client, project, name: state)

    async def in_thread(function, *args):
        return function(*args)

    async def scenario():
        following = asyncio.ensure_future(record_end(run))
        monkeypatch.setattr(report_hub, "_following", {(run.project, run.run): following})
        await asyncio.wait_for(report_hub._ReportsBase.settle_ended(
            SimpleNamespace(in_thread=in_thread), run.project), timeout=5)
        following.cancel()
        return report_hub.running(run.project)

    return asyncio.run(scenario())


@pytest.mark.parametrize("state", ["exited", "dead", "removing", None])
def test_the_next_request_waits_for_the_end_of_a_run_whose_container_ended(monkeypatch, state):
    """Once its container has ended, a run's end is being recorded (its folder hashed, its
    container removed: Docker then says "removing"): a request about the project waits for
    it rather than refusing "a report is still running"."""
    import asyncio

    async def record_end(run):  # a moment later, as execute() does
        await asyncio.sleep(0.3)
        run.finished_at = 1.0

    assert still_running_after_settling(monkeypatch, state, record_end) is None


def test_a_request_does_not_wait_for_a_run_still_running(monkeypatch):
    import asyncio

    async def never_ends(run):
        await asyncio.Event().wait()

    run = still_running_after_settling(monkeypatch, "running", never_ends)
    assert run is not None and run.run == "2026-12-06-run"


@pytest.mark.parametrize("line, kind", [
    ('HDSHUB-REPORT-PROGRESS {"cell": 2, "cells": 5, "source": "df.describe()"}', "progress"),
    ("HDSHUB-REPORT-PROGRESS {broken", "log"),
    ("HDSHUB-REPORT-RESULT [1, 2]", "log"),
    ('HDSHUB-REPORT-RESULT {"status": "ok"}', "result"),
    ("HDSHUB-REPORT-RESULT ", "log"),
    ("Traceback (most recent call last):", "log"),
])
def test_marker_lines_are_parsed_defensively(line, kind):
    assert report_runs.parse_line(line)[0] == kind


def test_forged_progress_values_do_not_reach_the_run():
    run = report_runs.ReportRun("r", "p", "survival", {}, "alice", "T")
    report_runs.show_progress(run, {"cell": 3, "cells": 9, "source": "x" * 500})
    for forged in ({"cell": "3", "cells": 9}, {"cell": 10, "cells": 9}, {"cell": None}, {}):
        report_runs.show_progress(run, forged)
    assert (run.cell, run.cells, len(run.current)) == (3, 9, 120)


def result_and_folder(status="ok"):
    outputs = [{"file": "r.ipynb", "size": 3, "sha256": "a" * 64}, {"file": "r.html", "size": 4, "sha256": "b" * 64}]
    result = {"run": "r", "status": status, "error": None, "outputs": outputs, "durations_s": {"execute": 1.0}}
    digests = {"r.ipynb": "a" * 64, "r.html": "b" * 64, "provenance.json": "c" * 64}
    return result, digests, json.dumps(result).encode()


def test_a_result_is_trusted_when_exit_code_folder_and_provenance_agree():
    result, digests, provenance = result_and_folder()
    run = report_runs.ReportRun("r", "p", "survival", {}, "alice", "T")
    report_runs.finish(run, result, 0, [], digests=digests, provenance=provenance)
    assert run.status == "ok" and run.exit_code == 0 and run.sha256 == digests


@pytest.mark.parametrize("change, words", [
    (lambda r, d, p: (r, d, p, 1), "exited with code 1"),           # a forged "ok", the runner failed
    (lambda r, d, p: (r, d, p, 137), "exited with code 137"),
    (lambda r, d, p: (r, {**d, "r.html": "f" * 64}, p, 0), "not those the result lists"),
    (lambda r, d, p: (r, {**d, "extra.csv": "e" * 64}, p, 0), "not those the result lists"),
    (lambda r, d, p: (r, d, None, 0), "provenance.json is missing"),
    (lambda r, d, p: (r, d, b"{not json", 0), "provenance.json is missing or unreadable"),
    (lambda r, d, p: (r, d, json.dumps({**r, "status": "failed"}).encode(), 0), "does not say what"),
])
def test_a_result_the_container_or_its_folder_contradicts_is_not_trusted(change, words):
    result, digests, provenance, exit_code = change(*result_and_folder())
    run = report_runs.ReportRun("r", "p", "survival", {}, "alice", "T")
    report_runs.finish(run, result, exit_code, ["last line"], digests=digests, provenance=provenance)
    assert run.status == "failed" and run.outputs == []
    assert words in run.error["en"] and "non retenu" in run.error["fr"] and run.error["log"] == ["last line"]


def test_a_run_stopped_by_the_runner_at_its_deadline_is_failed_with_its_reason():
    result, digests, _ = result_and_folder("failed")
    result["error"] = {"stage": "time-limit", "fr": "arrêté après 2 h", "en": "stopped after 2 h"}
    run = report_runs.ReportRun("r", "p", "survival", {}, "alice", "T")
    report_runs.finish(run, result, report_runs.TIME_LIMIT_EXIT, [], digests=digests,
                       provenance=json.dumps(result).encode())
    assert run.status == "failed" and run.error["stage"] == "time-limit"


def test_docker_start_times_are_read_to_the_second():
    class Container:
        attrs = {"State": {"StartedAt": "2026-11-22T10:00:05.123456789Z"}}

    assert report_runs.started_at(Container()) == pytest.approx(1795341605.123456)


def test_the_spec_carries_the_time_limit_and_the_image_content_hash():
    run = report_runs.ReportRun("r-1", "p", "survival", {}, "alice", "T", source_ip="10.0.0.1")
    spec = report_runs.runner_spec(run, "python-stats", "img", "sha256:1", "c0ffee", 60)
    assert (spec["time_limit_seconds"], spec["image_content_hash"], spec["source_ip"]) == (60, "c0ffee", "10.0.0.1")


def test_the_runner_deadline_and_the_runs_end_exclude_each_other():
    import threading

    fired = threading.Event()
    early = report_runner.Deadline(0, fired.set).start()
    assert fired.wait(10) and early.finishing() is False  # the deadline took the end
    late = report_runner.Deadline(0.2, fired.clear)
    assert late.finishing() is True  # the run claims its end before the deadline starts
    late.start()
    late.timer.join(10)
    assert fired.is_set()  # the deadline did not run after the run's end


def test_r_strings_keep_accented_text():
    assert report_runner.r_string('Besançon "é" \\ fin\n') == '"Besan\\U{e7}on \\"\\U{e9}\\" \\\\ fin\\U{a}"'
    assert report_runner.r_string("plain") == '"plain"'


def test_dotted_r_parameter_names_are_accepted_for_r_notebooks_only():
    r_cell = notebook('seuil.min <- 10\nville = "Paris"\n_x <- 1\n.cache <- 2\n',
                      kernelspec={"name": "ir", "language": "R"})
    declared = reports.declared_parameters(r_cell)
    assert set(declared) == {"seuil.min", "ville", ".cache"}
    assert reports.notebook_language(r_cell) == "r"
    given = {"seuil.min": 12, "ville": "Besançon"}
    assert reports.validate_parameters(declared, given, "r") == given
    with pytest.raises(reports.ReportError, match="is not a parameter name"):
        reports.validate_parameters(declared, given, "python")


def test_min_count_under_the_disclosure_floor_is_refused_naming_it():
    from hdshub.egress import load_egress

    floor = load_egress()["disclosure"]["min_count"]
    declared = {"min_count": 10, "language": "fr"}
    for bad in (1, floor - 1, floor + 0.5, True):
        with pytest.raises(reports.ReportError) as refused:
            reports.check_min_count(declared, {"min_count": bad}, floor)
        assert refused.value.status == 400
        assert "min_count" in refused.value.fr and f"au moins {floor}" in refused.value.fr
        assert "min_count" in refused.value.en and f"at least {floor}" in refused.value.en
    reports.check_min_count(declared, {"min_count": floor}, floor)
    reports.check_min_count(declared, {"language": "en"}, floor)
    reports.check_min_count({"other": 1}, {}, floor)


def test_the_disclosure_floor_is_policy_data_a_site_cannot_drop_to_one(tmp_path):
    from hdshub.egress import load_egress
    from hdshub.validation import ConfigError

    site = tmp_path / "egress.yaml"
    site.write_text("disclosure:\n  min_count: 11\n", encoding="utf-8")
    assert load_egress(site)["disclosure"]["min_count"] == 11
    site.write_text("disclosure:\n  min_count: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="min_count"):
        load_egress(site)


def test_survival_time_unit_follows_the_language_by_default():
    template = json.loads(reports.templates()["survival"].read_text(encoding="utf-8"))
    assert reports.declared_parameters(template)["time_unit"] == ""
    setup = "".join(template["cells"][1]["source"])
    assert 'time_unit = time_unit or t("mois", "months")' in setup


def test_archive_chunks_are_read_as_a_stream():
    import io
    import tarfile

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        data = b"x" * 100_000
        info = tarfile.TarInfo("run/out.csv")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = archive.getvalue()
    chunks = [raw[i:i + 777] for i in range(0, len(raw), 777)]
    with tarfile.open(fileobj=report_runs._ChunkReader(chunks), mode="r|") as tar:
        (member,) = list(tar)
    assert member.name == "run/out.csv"


def test_the_end_of_a_run_is_an_audit_event_the_trail_accepts():
    """The hub's hashes go into the event in the trail's own format (flat details)."""
    from hdshub import audit_log

    result, digests, provenance = result_and_folder()
    run = report_runs.ReportRun("r", "p", "survival", {}, "alice (hdshub CLI)", "T", source_ip="10.0.0.1")
    report_runs.finish(run, result, 0, [], digests=digests, provenance=provenance)
    record = audit_log.validate("p", report_runs.end_event(run))
    assert record["action"] == "report-run" and record["outcome"] == "ok"
    details = record["details"]
    assert details["outputs_sha256"] == f"{'b' * 64}  r.html\n{'a' * 64}  r.ipynb\n"
    assert details["provenance_sha256"] == "c" * 64 and details["exit_code"] == 0 and details["outputs_count"] == 2
    many = report_runs.digest_details({f"out-{i}.csv": "d" * 64 for i in range(500)})
    assert "outputs_sha256" not in many and many["outputs_count"] == 500 and len(many["outputs_listing_sha256"]) == 64
