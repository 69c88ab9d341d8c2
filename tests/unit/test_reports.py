"""Study reports without Docker: what may run, with which parameters, in which container.

The real thing (templates run in kit containers, PDF rendered, failing notebook, hostile
parameters through the hub, provenance hashes) is tests/integration/test_reports.py.
"""

from __future__ import annotations

import json
from argparse import Namespace

import pytest

from hdshub import hardening, report_cli, report_runs, reports
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
