"""Study reports on a real hub: each template runs in a real kit container and delivers its
four outputs; a failing notebook names its cell and leaves a partial notebook; hostile
parameters are refused before anything starts; the run's container is locked down."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile
import time

import docker
import pytest

from hdshub import demo, images, kit_environments, naming, project_resources, report_hub, report_runs
from hdshub.hardening import container_problems
from hdshub.kits import load_kits
from hdshub.tiers import enforced, load_tiers
from tests.integration.conftest import new_slug
from tests.support.dashboards import dashboard_project

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def project(hub, docker_client):
    """The synthetic cohort, a member of each role, someone of no project, and a token each."""
    made = dashboard_project(hub, docker_client, {
        "rstat": "statistician", "rclin": "clinician", "rana": "analyst", "rstew": "steward",
        "rcheck": "checker"}, publish=False)
    hub.add_user("rnobody")
    made.tokens = {user: hub.user_token(user) for user in [*made.passwords, "rnobody"]}
    return made


def wait_for_end(session, url: str, run: str, seconds: float = 240) -> dict:
    deadline = time.monotonic() + seconds
    while (state := session.get(f"{url}/{run}", timeout=30).json())["status"] in ("starting", "running"):
        assert time.monotonic() < deadline, state
        time.sleep(1)
    return state


def report_events(hub, slug: str, run: str) -> list[dict]:
    trail = (hub.state.audit_dir / f"{slug}.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, trail) if e["action"] == "report-run" and e["target"] == f"outputs/reports/{run}"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256sum(files: dict[str, bytes]) -> str:
    """What `sha256sum` prints for the outputs of a run's folder (provenance.json aside)."""
    return "".join(f"{sha256(data)}  {name}\n" for name, data in sorted(files.items()) if name != "provenance.json")


def read_report(docker_client, slug: str, run: str, tmp_path) -> dict[str, bytes]:
    """{file name: content} of outputs/reports/<run>/, read from the project's volume."""
    container = docker_client.containers.create(
        project_resources.UTILITY_IMAGE, ["true"], network_mode="none",
        volumes={naming.volume_name(slug, "outputs"): {"bind": "/outputs", "mode": "ro"}},
        name=f"hds-{slug}-read-{time.time_ns()}")
    try:
        stream, _ = container.get_archive(f"/outputs/reports/{run}")
        archive = io.BytesIO(b"".join(stream))
    finally:
        container.remove(force=True)
    with tarfile.open(fileobj=archive) as tar:
        return {member.name.split("/", 1)[1]: tar.extractfile(member).read()
                for member in tar.getmembers() if member.isfile()}


def run_name(output: str) -> str:
    return re.search(r"report (\S+) (?:started|done|failed)", output).group(1)


def cohort(tmp_path) -> bytes:
    """The bytes `hdshub data import` put in the project (dashboard_project imports them)."""
    return demo.write_cohort(tmp_path / demo.DEMO_FILE).read_bytes()


@pytest.mark.parametrize("template, parameters, expected", [
    # Each arm (about 250 people) and the diabetics are under a threshold of 300: hidden.
    ("descriptive", {"language": "fr", "min_count": 300}, ["Tableau 1", "moyenne (ET)", "&lt; 300</td>"]),
    ("comparison", {"language": "en"}, ["Welch p", "Hedges g", "Cramér", "rank-biserial r"]),
    ("survival", {"language": "fr"}, ["Kaplan-Meier", "Test du log-rank", "Modèle de Cox", "data:image/png;base64",
                                      "médiane de survie (mois)"]),
    ("survival", {"language": "en"}, ["Hazard ratios adjusted for", "Log-rank test", "Cox model",
                                      "median survival (months)"]),
])
def test_each_template_delivers_notebook_html_pdf_and_provenance(
        hub, docker_client, project, tmp_path, template, parameters, expected):
    pairs = [item for name, value in parameters.items() for item in ("-p", name, json.dumps(value).strip('"'))]
    language = parameters["language"]
    done = hub.cli("report", "run", project.slug, template, *pairs, "--by", "rstat")
    run = run_name(done.stderr)
    assert re.search(r"cell \d+/\d+", done.stderr), done.stderr  # progress while it ran
    assert f"report {run} done" in done.stdout
    files = read_report(docker_client, project.slug, run, tmp_path)
    assert set(files) == {f"{run}.ipynb", f"{run}.html", f"{run}.pdf", "provenance.json"}

    html = files[f"{run}.html"].decode()
    for text in expected:
        assert text in html, text
    assert "suppress_small_counts(" not in html and "import pandas" not in html  # code hidden
    if language == "en":
        assert "mois" not in html and "médiane" not in html
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"http", html)  # loads nothing

    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(files[f"{run}.pdf"])
    subprocess.run(["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
                   check=True, timeout=60)
    (page,) = tmp_path.glob("page*.png")
    assert page.stat().st_size > 5000  # a rendered page, not a blank one

    provenance = json.loads(files["provenance.json"])
    assert provenance["status"] == "ok" and provenance["error"] is None
    assert provenance["parameters"] == parameters and provenance["source"] == template
    assert provenance["requested_by"] == "rstat (hdshub CLI)"
    image = docker_client.images.get("hdshub/python-stats:latest")
    assert provenance["image_id"] == image.id and provenance["exit_code"] == 0
    assert provenance["image_content_hash"] == image.labels[images.HASH_LABEL] != ""
    assert provenance["environment_volume"] == kit_environments.volume_name("python-stats", image.labels[images.HASH_LABEL])
    assert provenance["packages"]["python"]["papermill"] and provenance["packages"]["python"]["lifelines"]
    (data,) = provenance["data"]
    raw = cohort(tmp_path)
    assert data == {"path": f"data/{demo.DEMO_FILE}", "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    for output in provenance["outputs"]:
        assert hashlib.sha256(files[output["file"]]).hexdigest() == output["sha256"]
    assert {o["file"] for o in provenance["outputs"]} == set(files) - {"provenance.json"}
    assert provenance["started_at"] <= provenance["finished_at"]

    executed = json.loads(files[f"{run}.ipynb"])
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and f'language = "{language}"' in "".join(injected[0]["source"])

    (event,) = report_events(hub, project.slug, run)
    assert event["outcome"] == "ok" and event["user"] == "rstat (hdshub CLI)"
    assert event["details"]["source"] == template and event["details"]["exit_code"] == 0
    # What the hub hashed itself once the container had ended: what the folder holds.
    assert event["details"]["provenance_sha256"] == sha256(files["provenance.json"])
    assert event["details"]["outputs_sha256"] == sha256sum(files)


def python_notebook(parameters: str, *sources: str) -> dict:
    """A Python notebook: a cell tagged `parameters`, then one code cell per source."""
    cells = [{"id": "p", "cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": None,
              "outputs": [], "source": parameters}]
    cells += [{"id": f"c{i}", "cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
               "source": source} for i, source in enumerate(sources)]
    return {"metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5, "cells": cells}


FAILING = python_notebook(
    "column = 'age'",
    "import pandas as pd\ndf = pd.read_csv('../data/cohorte_synthetique.csv')\nprint('rows', len(df))",
    "mean = df[column + '_typo'].mean()",
    "print('never reached')",
)


def put_notebook(docker_client, slug: str, tmp_path, name: str, notebook: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(notebook), encoding="utf-8")
    return demo.copy_to_work(docker_client, slug, path)


def test_a_failing_notebook_names_its_cell_and_leaves_a_partial_notebook(hub, docker_client, project, tmp_path):
    notebook = put_notebook(docker_client, project.slug, tmp_path, "echec.ipynb", FAILING)
    failed = hub.cli("report", "run", project.slug, notebook, "--by", "rstat", check=False)
    assert failed.returncode == 1, failed
    run = run_name(failed.stderr)
    assert "failed at cell" in failed.stderr and "df[column + '_typo'].mean()" in failed.stderr
    assert "KeyError" in failed.stderr and f"outputs/reports/{run}/{run}.ipynb" in failed.stderr
    files = read_report(docker_client, project.slug, run, tmp_path)
    assert set(files) == {f"{run}.ipynb", "provenance.json"}  # no HTML/PDF of a failed study
    provenance = json.loads(files["provenance.json"])
    assert provenance["status"] == "failed" and provenance["error"]["ename"] == "KeyError"
    cells = json.loads(files[f"{run}.ipynb"])["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert any("rows 500" in "".join(o.get("text", "")) for o in outputs)  # ran up to the failure
    assert any(o.get("ename") == "KeyError" for o in outputs)
    assert not any("never reached" in "".join(o.get("text", "")) for o in outputs)


@pytest.mark.parametrize("parameters, refusal", [
    ({"language = 'fr'\nimport os\nx": "en"}, "is not a parameter name"),
    ({"not_declared": 1}, "unknown parameter 'not_declared'"),
    ({"min_count": "5"}, "min_count expects number"),
    ({"covariates": "age"}, "covariates expects list"),
])
def test_hostile_parameters_are_refused_before_anything_starts(hub, project, parameters, refusal):
    session = hub.as_user(project.tokens["rstat"])
    reply = session.post(f"{hub.public_url}/hub/api/hdshub/reports/{project.slug}",
                         json={"notebook": "survival", "parameters": parameters}, timeout=30)
    assert reply.status_code == 400, reply.text
    assert refusal in reply.json()["message"] and "Paramètres refusés" in reply.json()["message"]
    runs = session.get(f"{hub.public_url}/hub/api/hdshub/reports/{project.slug}", timeout=30).json()["runs"]
    assert not any(r["parameters"] == parameters for r in runs)


QUICK = python_notebook("n = 1", "print('n =', n)")
RUN_REFUSED_FR = "Seuls les analystes, statisticiens et responsables des données du projet {} lancent ses rapports."
RUN_REFUSED_EN = "Only project {}'s analysts, statisticians and data stewards run its reports."


@pytest.mark.parametrize("user, role, allowed", [
    ("rana", "analyst", True), ("rstat", "statistician", True), ("rstew", "steward", True),
    ("rclin", "clinician", False), ("rcheck", "checker", False), ("rnobody", "no project", False),
])
def test_who_may_run_reports_and_see_runs(hub, docker_client, project, tmp_path, user, role, allowed):
    notebook = put_notebook(docker_client, project.slug, tmp_path, "rapide.ipynb", QUICK)
    session = hub.as_user(project.tokens[user])
    url = f"{hub.public_url}/hub/api/hdshub/reports/{project.slug}"
    reply = session.post(url, json={"notebook": notebook}, timeout=60)
    listed = session.get(url, timeout=30)
    if allowed:
        assert reply.status_code == 202, reply.text
        assert listed.status_code == 200 and reply.json()["run"] in [r["run"] for r in listed.json()["runs"]]
        state = wait_for_end(session, url, reply.json()["run"])
        assert state["status"] == "ok" and state["requested_by"] == user, state
        return
    assert reply.status_code == 403, reply.text
    message = reply.json()["message"]
    assert RUN_REFUSED_FR.format(project.slug) in message and RUN_REFUSED_EN.format(project.slug) in message
    assert listed.status_code == 403
    assert "voient ses rapports en cours" in listed.json()["message"] and "see its report runs" in listed.json()["message"]
    some_run = hub.as_user(project.tokens["rstat"]).get(url, timeout=30).json()["runs"]
    if some_run:
        detail = session.get(f"{url}/{some_run[0]['run']}", timeout=30)
        assert detail.status_code == 403 and "see its report runs" in detail.json()["message"]


@pytest.mark.parametrize("by", ["rclin", "rcheck", "rnobody", "not-a-user"])
def test_the_cli_acts_only_for_a_runner_of_the_project(hub, project, by):
    refused = hub.cli("report", "run", project.slug, "descriptive", "--by", by, check=False)
    assert refused.returncode == 2, refused
    assert f"{by} n'a pas ce rôle dans le projet {project.slug}" in refused.stderr
    assert f"{by} does not hold that role in project {project.slug}" in refused.stderr
    assert RUN_REFUSED_EN.format(project.slug) in refused.stderr


def test_bad_input_is_refused_before_the_hub_starts_anything(hub, project, tmp_path):
    bad_file = tmp_path / "params.yaml"
    bad_file.write_text("start: 2026-01-31\n", encoding="utf-8")
    refused = hub.cli("report", "run", project.slug, "descriptive", "-f", str(bad_file), check=False)
    assert refused.returncode == 2 and "start: date" in refused.stderr
    unknown = hub.cli("report", "run", project.slug, "work/absent.ipynb", "--by", "rstat", check=False)
    assert unknown.returncode == 2 and "work/absent.ipynb" in unknown.stderr


@pytest.mark.parametrize("min_count", [1, 5, 9])
def test_small_count_suppression_cannot_be_lowered_under_the_policy(hub, project, min_count):
    session = hub.as_user(project.tokens["rstat"])
    reply = session.post(f"{hub.public_url}/hub/api/hdshub/reports/{project.slug}",
                         json={"notebook": "descriptive", "parameters": {"min_count": min_count}}, timeout=30)
    assert reply.status_code == 400, reply.text
    message = reply.json()["message"]
    assert f"Paramètre min_count refusé : {min_count}" in message and "au moins 10" in message
    assert f"Parameter min_count refused: {min_count}" in message and "at least 10" in message


SLOW = python_notebook(
    "hub_ip = ''\nhub_port = 0\nseconds = 1",
    ("import socket\n"
     "try:\n"
     "    socket.create_connection((hub_ip, hub_port), timeout=3)\n"
     "    print('NETWORK-REACHED')\n"
     "except OSError as error:\n"
     "    print('NETWORK-REFUSED', type(error).__name__)\n"
     "try:\n"
     "    open('/home/jovyan/data/intrusion', 'w')\n"
     "    print('DATA-WRITTEN')\n"
     "except OSError as error:\n"
     "    print('DATA-READ-ONLY', error.errno)"),
    "import time\ntime.sleep(seconds)",
)


def test_the_run_container_is_locked_down_and_alone(hub, docker_client, project, tmp_path):
    notebook = put_notebook(docker_client, project.slug, tmp_path, "lent.ipynb", SLOW)
    session = hub.as_user(project.tokens["rstat"])
    url = f"{hub.public_url}/hub/api/hdshub/reports/{project.slug}"
    started = session.post(url, json={"notebook": notebook, "parameters": {
        "hub_ip": hub.runtime["hub_ip"], "hub_port": hub.runtime["hub_port"], "seconds": 25}}, timeout=60)
    assert started.status_code == 202, started.text
    run = started.json()["run"]
    deadline = time.monotonic() + 60
    while not (containers := docker_client.containers.list(
            filters={"label": f"{report_runs.LABEL_RUN}={run}"})):
        assert time.monotonic() < deadline, f"no container for run {run} after 60 s"
        time.sleep(0.5)
    (container,) = containers
    assert container_problems(container.attrs, project.slug, load_tiers()["public"].limits) == []
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    # The kit's packages come from its image's environment volume, read-only.
    environment = {m["Destination"]: m for m in container.attrs["Mounts"]}["/opt/hdshub/venv"]
    content = docker_client.images.get("hdshub/python-stats:latest").labels[images.HASH_LABEL]
    assert environment["Name"] == kit_environments.volume_name("python-stats", content)
    assert environment["RW"] is False

    second = session.post(url, json={"notebook": "descriptive"}, timeout=30)
    assert second.status_code == 409 and run in second.json()["message"]

    state = wait_for_end(session, url, run)
    assert state["status"] == "ok", state
    assert state["cells"] >= 4 and state["cell"] == state["cells"]
    assert not docker_client.containers.list(all=True, filters={"label": f"{report_runs.LABEL_RUN}={run}"})
    executed = json.loads(read_report(docker_client, project.slug, run, tmp_path)[f"{run}.ipynb"])
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "NETWORK-REFUSED" in printed and "NETWORK-REACHED" not in printed
    assert "DATA-READ-ONLY 30" in printed  # EROFS


def test_a_run_the_hub_lost_blocks_the_next_and_what_it_left_is_settled(hub, docker_client, project, tmp_path):
    """A report container the hub does not know (started before a restart) still counts as
    the project's running report; once it died, the next run turns its partial folder into
    a report folder that says "interrupted", and removes the dead container."""
    lost = "lost-run-1"
    orphan = docker_client.containers.run(
        project_resources.UTILITY_IMAGE,
        ["sh", "-c", f"mkdir -p /outputs/reports/.partial-{lost} && echo '{{}}' > "
                     f"/outputs/reports/.partial-{lost}/{lost}.ipynb && sleep 300"],
        detach=True, user="1000:1000", network_mode="none", name=report_runs.container_name(project.slug, lost),
        volumes={naming.volume_name(project.slug, "outputs"): {"bind": "/outputs", "mode": "rw"}},
        labels={project_resources.LABEL_PROJECT: project.slug, "org.hdshub.purpose": report_runs.PURPOSE,
                report_runs.LABEL_RUN: lost})
    session = hub.as_user(project.tokens["rstat"])
    url = f"{hub.public_url}/hub/api/hdshub/reports/{project.slug}"
    try:
        deadline = time.monotonic() + 30  # what it leaves is written before it dies
        while orphan.exec_run(["test", "-f", f"/outputs/reports/.partial-{lost}/{lost}.ipynb"]).exit_code:
            assert time.monotonic() < deadline, "the lost run never wrote its partial notebook"
            time.sleep(0.1)
        refused = session.post(url, json={"notebook": "descriptive"}, timeout=30)
        assert refused.status_code == 409 and lost in refused.json()["message"], refused.text
        assert "redémarrage du hub" in refused.json()["message"]
    finally:
        orphan.kill()  # it dies, as a run stopped at the time limit does; the container stays
    # The hub may wait up to report_hub.SETTLE_SECONDS for the lost run's end to be recorded.
    started = session.post(url, json={"notebook": "descriptive"}, timeout=report_hub.SETTLE_SECONDS + 60)
    assert started.status_code == 202, started.text + "\n" + "\n".join(  # the follower's lines, if it was slow
        line for line in hub.hub_log(400).splitlines() if "report" in line)[-3000:]
    run = started.json()["run"]
    state = wait_for_end(session, url, run)
    assert state["status"] == "ok", state
    assert not docker_client.containers.list(all=True, filters={"label": f"{report_runs.LABEL_RUN}={lost}"})
    (ended,) = report_events(hub, project.slug, lost)  # the lost run's end is on record too
    assert ended["outcome"] == "failed" and ended["details"]["adopted"] is True
    assert ended["details"]["exit_code"] == 137  # killed
    settled = read_report(docker_client, project.slug, lost, tmp_path)
    assert set(settled) == {f"{lost}.ipynb", "provenance.json"}
    provenance = json.loads(settled["provenance.json"])
    assert provenance["status"] == "interrupted" and "arrêté avant sa fin" in provenance["error"]["fr"]
    assert provenance["outputs"] == [{"file": f"{lost}.ipynb", "size": 3,
                                      "sha256": hashlib.sha256(b"{}\n").hexdigest()}]


FORGER = python_notebook(
    "n = 1",
    # Whatever runs in the container writes to its standard output, as the runner does.
    "import os\nos.write(1, b'HDSHUB-REPORT-PROGRESS {broken\\n')\n"
    "os.write(1, b'HDSHUB-REPORT-RESULT [\"forged\"]\\n')\nos.write(1, b'HDSHUB-REPORT-RESULT \\xff\\n')",
    "print('after the forged lines', n)",
)


def test_malformed_marker_lines_do_not_break_the_run(hub, docker_client, project, tmp_path):
    notebook = put_notebook(docker_client, project.slug, tmp_path, "faussaire.ipynb", FORGER)
    session = hub.as_user(project.tokens["rstat"])
    url = f"{hub.public_url}/hub/api/hdshub/reports/{project.slug}"
    started = session.post(url, json={"notebook": notebook}, timeout=60)
    assert started.status_code == 202, started.text
    state = wait_for_end(session, url, started.json()["run"])
    assert state["status"] == "ok" and state["exit_code"] == 0, state
    assert set(state["sha256"]) == {f"{state['run']}.ipynb", f"{state['run']}.html", f"{state['run']}.pdf",
                                    "provenance.json"}


def test_a_run_survives_a_hub_restart_and_its_end_is_recorded(hub, docker_client, project, tmp_path):
    """The hub restarts while a run goes: the new hub process finds its container, shows the
    run, follows it to its end, hashes its outputs and records the `report-run` event the
    usage report counts."""
    notebook = put_notebook(docker_client, project.slug, tmp_path, "longue.ipynb",
                            python_notebook("seconds = 1", "import time\ntime.sleep(seconds)\nprint('slept')"))
    session = hub.as_user(project.tokens["rstat"])
    url = f"{hub.public_url}/hub/api/hdshub/reports/{project.slug}"
    started = session.post(url, json={"notebook": notebook, "parameters": {"seconds": 40}}, timeout=60)
    assert started.status_code == 202, started.text
    run = started.json()["run"]
    hub.restart()
    listed = session.get(url, timeout=60)
    assert listed.status_code == 200, listed.text
    (found,) = [r for r in listed.json()["runs"] if r["run"] == run]
    assert found["adopted"] is True and found["requested_by"] == "rstat" and found["source"] == f"work/{notebook[5:]}"
    state = wait_for_end(session, url, run)
    assert state["status"] == "ok", state
    files = read_report(docker_client, project.slug, run, tmp_path)
    (event,) = report_events(hub, project.slug, run)
    assert event["outcome"] == "ok" and event["user"] == "rstat" and event["details"]["adopted"] is True
    assert event["details"]["outputs_sha256"] == sha256sum(files)
    assert not docker_client.containers.list(all=True, filters={"label": f"{report_runs.LABEL_RUN}={run}"})


def run_directly(docker_client, project, tmp_path, name: str, notebook: dict, **limits) -> report_runs.ReportRun:
    """A run carried out by this process as a hub would (same container, same follower), with
    a time limit a test can wait for."""
    path = put_notebook(docker_client, project.slug, tmp_path, name, notebook)
    run = report_runs.ReportRun(f"direct-{time.time_ns()}", project.slug, path, {}, "rstat", "T")
    kit = load_kits()["python-stats"]
    client = docker.from_env(timeout=600)
    return report_runs.carry_out(client, run, enforced(load_tiers()["public"]), kit.name, kit.image_tag, **limits)


ENDLESS = python_notebook("n = 1", "print('started')", "import time\ntime.sleep(3600)", "print('never')")


def test_the_runner_stops_itself_at_the_time_limit(docker_client, project, tmp_path):
    run = run_directly(docker_client, project, tmp_path, "sans-fin.ipynb", ENDLESS, time_limit=20)
    assert run.status == "failed" and run.exit_code == report_runs.TIME_LIMIT_EXIT, run
    assert run.error["stage"] == "time-limit" and run.error["source"] == "import time", run.error  # its own record
    assert "20 s" in run.error["en"] and "durée maximale" in run.error["fr"]
    files = read_report(docker_client, project.slug, run.run, tmp_path)
    provenance = json.loads(files["provenance.json"])
    assert provenance["status"] == "failed" and provenance["exit_code"] == report_runs.TIME_LIMIT_EXIT
    assert f"{run.run}.ipynb" in files and run.sha256 == {f: sha256(b) for f, b in files.items()}


def test_a_container_past_the_time_limit_is_killed_by_whoever_follows_it(docker_client, project):
    """As a hub that restarted finds it: a run container started long enough ago (here: a
    limit of 0 s) that does not stop by itself is killed at once, and its run ends failed."""
    orphan = docker_client.containers.run(
        project_resources.UTILITY_IMAGE, ["sleep", "300"], detach=True, user="1000:1000",
        network_mode="none", name=report_runs.container_name(project.slug, "stuck-run-1"),
        labels={project_resources.LABEL_PROJECT: project.slug, "org.hdshub.purpose": report_runs.PURPOSE,
                report_runs.LABEL_RUN: "stuck-run-1"})
    (found,) = [c for c in report_runs.unfollowed(docker_client, project.slug, set()) if c.id == orphan.id]
    run = report_runs.carry_out(docker.from_env(timeout=120), report_runs.adopted_run(found), container=found,
                                time_limit=0, grace=0)
    assert run.status == "failed" and "longest a report may run" in run.error["en"], run
    assert not docker_client.containers.list(all=True, filters={"id": orphan.id})


@pytest.fixture(scope="module")
def r_project(hub):
    slug = new_slug()
    hub.cli("project", "create", slug, "--tier", "public", "--kit", "r-stats", "--title", "Étude R")
    hub.add_user("rstat-r")
    hub.cli("project", "add-member", slug, "rstat-r", "--role", "statistician")
    return slug, hub.user_token("rstat-r")


def test_a_python_template_is_refused_up_front_on_an_r_project(hub, r_project):
    slug, token = r_project
    reply = hub.as_user(token).post(f"{hub.public_url}/hub/api/hdshub/reports/{slug}",
                                    json={"notebook": "survival"}, timeout=30)
    assert reply.status_code == 400, reply.text
    message = reply.json()["message"]
    assert f"Le modèle survival demande le kit python-stats ; le projet {slug} utilise r-stats" in message
    assert "Lancez plutôt un notebook R" in message
    assert f"Template survival needs kit python-stats; project {slug} uses r-stats" in message
    assert "Run an R notebook of the work folder instead" in message


R_NOTEBOOK = {
    "metadata": {"kernelspec": {"name": "ir", "display_name": "R", "language": "R"}},
    "nbformat": 4, "nbformat_minor": 5, "cells": [
        {"id": "p", "cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": None,
         "outputs": [], "source": 'ville <- "Paris"\nseuil.min <- 10\ngroupes <- list("a")'},
        {"id": "c", "cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": 'cat(sprintf("VILLE=%s NCHAR=%d SEUIL=%d GROUPES=%s\\n", ville, nchar(ville), '
                   'as.integer(seuil.min + 1), paste(unlist(groupes), collapse = "+")))'},
    ],
}


def test_an_r_notebook_runs_with_accented_and_dotted_parameters(hub, docker_client, r_project, tmp_path):
    slug, _ = r_project
    notebook = put_notebook(docker_client, slug, tmp_path, "étude-r.ipynb", R_NOTEBOOK)
    done = hub.cli("report", "run", slug, notebook, "-p", "ville", "Besançon é", "-p", "seuil.min", "11",
                   "-p", "groupes", '["élève", "naïf"]', "--by", "rstat-r")
    run = run_name(done.stderr)
    files = read_report(docker_client, slug, run, tmp_path)
    assert set(files) == {f"{run}.ipynb", f"{run}.html", f"{run}.pdf", "provenance.json"}
    executed = json.loads(files[f"{run}.ipynb"])
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "VILLE=Besançon é NCHAR=10 SEUIL=12 GROUPES=élève+naïf" in printed, printed
    assert "VILLE=Besançon é" in files[f"{run}.html"].decode()
    provenance = json.loads(files["provenance.json"])
    assert provenance["parameters"] == {"ville": "Besançon é", "seuil.min": 11, "groupes": ["élève", "naïf"]}
    assert provenance["packages"]["r"]["R"] and provenance["kit"] == "r-stats"
