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

import pytest

from hdshub import demo, naming, project_resources, report_runs
from hdshub.hardening import container_problems
from hdshub.tiers import load_tiers
from tests.support.dashboards import dashboard_project

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def project(hub, docker_client):
    """The synthetic cohort, a statistician, a clinician, and a member's token each."""
    made = dashboard_project(hub, docker_client, {"rstat": "statistician", "rclin": "clinician"},
                             publish=False)
    made.tokens = {user: hub.user_token(user) for user in made.passwords}
    return made


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
    ("survival", {"language": "fr"}, ["Kaplan-Meier", "Test du log-rank", "Modèle de Cox", "data:image/png;base64"]),
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
    assert provenance["image_id"] == docker_client.images.get("hdshub/python-stats:latest").id
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

    trail = (hub.state.audit_dir / f"{project.slug}.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in trail if '"report-run"' in line]
    assert any(e["target"] == f"outputs/reports/{run}" and e["outcome"] == "ok"
               and e["user"] == "rstat (hdshub CLI)" and e["details"]["source"] == template for e in events)


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


def test_who_may_run_reports(hub, project, tmp_path):
    clinician = hub.as_user(project.tokens["rclin"])
    reply = clinician.post(f"{hub.public_url}/hub/api/hdshub/reports/{project.slug}",
                           json={"notebook": "descriptive"}, timeout=30)
    assert reply.status_code == 403 and "statisticiens" in reply.json()["message"]
    bad_file = tmp_path / "params.yaml"
    bad_file.write_text("start: 2026-01-31\n", encoding="utf-8")
    refused = hub.cli("report", "run", project.slug, "descriptive", "-f", str(bad_file), check=False)
    assert refused.returncode == 2 and "start: date" in refused.stderr
    unknown = hub.cli("report", "run", project.slug, "work/absent.ipynb", check=False)
    assert unknown.returncode == 2 and "work/absent.ipynb" in unknown.stderr


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
            filters={"label": f"{report_runs.LABEL_RUN}={run}"})) and time.monotonic() < deadline:
        time.sleep(0.5)
    (container,) = containers
    assert container_problems(container.attrs, project.slug, load_tiers()["public"].limits) == []
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"

    second = session.post(url, json={"notebook": "descriptive"}, timeout=30)
    assert second.status_code == 409 and run in second.json()["message"]

    while time.monotonic() < deadline + 60:
        state = session.get(f"{url}/{run}", timeout=30).json()
        if state["status"] not in ("starting", "running"):
            break
        time.sleep(1)
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
        refused = session.post(url, json={"notebook": "descriptive"}, timeout=30)
        assert refused.status_code == 409 and lost in refused.json()["message"], refused.text
        assert "redémarrage du hub" in refused.json()["message"]
    finally:
        orphan.kill()  # it dies, as a run stopped at the time limit does; the container stays
    started = session.post(url, json={"notebook": "descriptive"}, timeout=30)
    assert started.status_code == 202, started.text
    run = started.json()["run"]
    deadline = time.monotonic() + 180
    while (state := session.get(f"{url}/{run}", timeout=30).json())["status"] in ("starting", "running"):
        assert time.monotonic() < deadline, state
        time.sleep(1)
    assert state["status"] == "ok", state
    assert not docker_client.containers.list(all=True, filters={"label": f"{report_runs.LABEL_RUN}={lost}"})
    settled = read_report(docker_client, project.slug, lost, tmp_path)
    assert set(settled) == {f"{lost}.ipynb", "provenance.json"}
    provenance = json.loads(settled["provenance.json"])
    assert provenance["status"] == "interrupted" and "arrêté avant sa fin" in provenance["error"]["fr"]
    assert provenance["outputs"] == [{"file": f"{lost}.ipynb", "size": 3,
                                      "sha256": hashlib.sha256(b"{}\n").hexdigest()}]
