"""Dashboards on a real hub: publish, serve read-only through Voilà only, withdraw; members of
a project open its dashboards, nobody else does."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest
import requests

from hdshub import dashboards
from hdshub.hardening import container_problems
from hdshub.project_resources import LABEL_PROJECT
from hdshub.tiers import load_tiers
from tests.support.dashboards import DASHBOARD, dashboard_project

pytestmark = pytest.mark.docker

REFUSED_EVERYWHERE = ("lab", "tree", "api/contents", "api/contents/data", "terminals/websocket/1",
                      "api/terminals", "files/data/cohorte_synthetique.csv", "api/sessions", "api/kernels",
                      "nbconvert/html/demo-survie.ipynb", "edit/demo-survie.ipynb")


@pytest.fixture(scope="module")
def projects(hub, docker_client):
    """Project A (analyst, clinician, checker) with the demo dashboard; project B with its
    own clinician and nothing published."""
    a = dashboard_project(hub, docker_client, {"dana": "analyst", "dclin": "clinician", "dcheck": "checker"})
    b = dashboard_project(hub, docker_client, {"dclinb": "clinician"}, publish=False)
    return a, b


def dashboard_container(docker_client, slug: str):
    (container,) = docker_client.containers.list(
        filters={"label": [f"{LABEL_PROJECT}={slug}", "org.hdshub.purpose=dashboard-server"]})
    return container


def test_publish_stores_a_read_only_snapshot_whose_sha256_is_on_record(hub, docker_client, projects):
    a, _ = projects
    assert f"published {a.slug}/{DASHBOARD} version 1" in a.published
    listed = hub.cli("dashboard", "list", a.slug).stdout
    assert DASHBOARD in listed and "v1" in listed
    (record,) = hub.api.get_group(a.slug)["properties"]["dashboards"]
    (entry,) = record["versions"]
    assert entry["source"] == "work/demo-survie.ipynb" and entry["published_by"].endswith("(hdshub CLI)")

    container = dashboard_container(docker_client, a.slug)
    served = container.exec_run(["cat", f"{dashboards.LIVE_DIR}/{DASHBOARD}.ipynb"], user="1000").output
    assert hashlib.sha256(served).hexdigest() == entry["sha256"] and len(served) == entry["size"]
    stored = json.loads(served)
    assert all(not cell.get("outputs") for cell in stored["cells"] if cell["cell_type"] == "code")
    assert stored["metadata"]["hdshub"]["version"] == 1
    archived = container.exec_run(["cat", f"{dashboards.MOUNT}/archive/{DASHBOARD}/v1.ipynb"], user="1000").output
    assert archived == served
    for target in (f"{dashboards.LIVE_DIR}/{DASHBOARD}.ipynb", f"{dashboards.LIVE_DIR}/new.ipynb",
                   "/home/jovyan/data/cohorte_synthetique.csv"):
        result = container.exec_run(["sh", "-c", f"echo x >> {target}"], user="1000")
        # Root's files, mode 0444, on a read-only mount: refused at the first of the two checks.
        assert result.exit_code != 0 and (b"Permission denied" in result.output
                                          or b"Read-only file system" in result.output), target
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts[dashboards.MOUNT]["RW"] is False and mounts[dashboards.MOUNT]["Name"].endswith("-dashboards")
    mode = container.exec_run(["stat", "-c", "%U %a", f"{dashboards.LIVE_DIR}/{DASHBOARD}.ipynb"]).output
    assert mode.split() == [b"root", b"444"]


def test_dashboard_server_is_hardened_guarded_and_preheated(hub, docker_client, projects):
    a, _ = projects
    container = dashboard_container(docker_client, a.slug)
    container.reload()
    assert container_problems(container.attrs, a.slug, load_tiers()["public"].limits) == []
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert "/home/jovyan/work" not in mounts and "/home/jovyan/outputs" not in mounts
    assert all(m["RW"] is False for m in mounts.values())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        log = container.logs().decode(errors="replace")
        if "hdshub_voila: preparing" in log:
            break
        time.sleep(0.5)
    assert "hdshub_guard: project %s, mode dashboard" % a.slug in log
    assert "enforcing /etc/hdshub/policy.json" in log
    assert "hdshub_voila: preparing 2 kernel(s) for each of demo-survie.ipynb" in log


def test_a_member_opens_the_dashboard_through_the_hub(hub, projects):
    a, _ = projects
    for user in ("dclin", "dana", "dcheck"):
        session = hub.login(user, a.passwords[user])
        page = session.get(f"{hub.public_url}{a.door}", timeout=120)
        assert page.status_code == 200, (user, page.status_code, page.text[:300])
        assert page.url.endswith(a.render)
        assert 'class="jp-Notebook theme-light hds-dashboard' in page.text
        assert "import ipywidgets" not in page.text  # sources stripped
        assert "cdn." not in page.text  # nothing fetched from outside the hub


def test_the_dashboard_server_refuses_everything_but_voila_to_everyone(hub, projects):
    a, _ = projects
    for user in ("dclin", "dana"):
        session = hub.login(user, a.passwords[user])
        assert session.get(f"{hub.public_url}{a.door}", timeout=120).status_code == 200  # logged in there
        for path in REFUSED_EVERYWHERE:
            reply = session.get(f"{hub.public_url}{a.server(path)}", timeout=30, allow_redirects=False)
            assert reply.status_code == 403, (user, path, reply.status_code)
            if "/api/" in f"/{path}":
                assert reply.json()["reason"] == "dashboard-only", path
        kernel_start = session.post(f"{hub.public_url}{a.server('api/kernels')}", json={}, timeout=30)
        assert kernel_start.status_code == 403


def test_voilas_own_file_routes_hand_out_no_raw_data(hub, projects):
    """Voilà's routes pass the gate on a dashboard server; its file and static handlers must
    still give nothing of data/ (file_allowlist is empty; spellings are judged by the gate)."""
    a, _ = projects
    session = hub.login("dclin", a.passwords["dclin"])
    assert session.get(f"{hub.public_url}{a.door}", timeout=120).status_code == 200
    for path in ("voila/files/data/cohorte_synthetique.csv", "voila/files/../data/cohorte_synthetique.csv",
                 "voila/files/..%2fdata%2fcohorte_synthetique.csv", "voila/static/..%2f..%2fdata%2fcohorte_synthetique.csv",
                 "voila/render/data/cohorte_synthetique.csv", "voila/tree/data"):
        request = requests.Request("GET", f"{hub.public_url}{a.server(path)}")
        prepared = session.prepare_request(request)
        prepared.url = f"{hub.public_url}{a.server(path)}"  # exactly as written: no '..' folding
        reply = session.send(prepared, timeout=30, allow_redirects=False)
        if reply.status_code == 302:  # Voilà sends what is not a notebook elsewhere: follow it
            reply = session.get(requests.compat.urljoin(prepared.url, reply.headers["Location"]), timeout=30)
        else:
            assert reply.status_code in (403, 404), (path, reply.status_code)
        assert "patient_id" not in reply.text, path


def test_a_clinician_of_another_project_sees_and_opens_nothing(hub, projects):
    a, b = projects
    session = hub.login("dclinb", b.passwords["dclinb"])
    home = session.get(f"{hub.public_url}/hub/home", timeout=30).text
    assert b.slug in home and a.slug not in home and DASHBOARD not in home
    assert session.get(f"{hub.public_url}{a.door}", timeout=60).status_code == 403
    direct = session.get(f"{hub.public_url}{a.render}", timeout=60)
    assert direct.status_code == 403 and 'data-voila="voila"' not in direct.text
    listing = session.get(f"{hub.public_url}/hub/api/hdshub/dashboards/{a.slug}", timeout=30)
    assert listing.status_code == 403


def test_home_page_lists_the_projects_dashboards(hub, projects):
    a, _ = projects
    home = hub.login("dclin", a.passwords["dclin"]).get(f"{hub.public_url}/hub/home", timeout=30).text
    assert f'href="/hub/dashboards/{a.slug}/{DASHBOARD}"' in home
    assert '<form class="hds-publish' not in home  # clinicians do not publish


def test_only_publishers_publish_and_withdraw(hub, projects):
    a, _ = projects
    clinician = hub.as_user(hub.user_token("dclin"))
    api = f"{hub.public_url}/hub/api/hdshub/dashboards/{a.slug}"
    assert clinician.post(api, json={"notebook": "work/demo-survie.ipynb"}, timeout=60).status_code == 403
    assert clinician.delete(f"{api}/{DASHBOARD}", timeout=60).status_code == 403
    analyst = hub.as_user(hub.user_token("dana"))
    refused = analyst.post(api, json={"notebook": "../data/cohorte_synthetique.csv"}, timeout=60)
    assert refused.status_code == 400 and "work" in refused.json()["message"]
    missing = analyst.post(api, json={"notebook": "work/absent.ipynb"}, timeout=60)
    assert missing.status_code == 404


def test_withdraw_then_publish_again_makes_version_2(hub, docker_client, projects):
    a, _ = projects
    analyst = hub.as_user(hub.user_token("dana"))
    api = f"{hub.public_url}/hub/api/hdshub/dashboards/{a.slug}"
    withdrawn = analyst.delete(f"{api}/{DASHBOARD}", timeout=180)
    assert withdrawn.status_code == 200 and withdrawn.json()["server"] == "stopped"
    assert analyst.get(api, timeout=30).json()["dashboards"] == []
    assert DASHBOARD not in hub.cli("dashboard", "list", a.slug).stdout
    clinician = hub.login("dclin", a.passwords["dclin"])
    assert clinician.get(f"{hub.public_url}{a.door}", timeout=60).status_code == 404
    assert not docker_client.containers.list(
        filters={"label": [f"{LABEL_PROJECT}={a.slug}", "org.hdshub.purpose=dashboard-server"]})

    published = analyst.post(api, json={"notebook": "work/demo-survie.ipynb", "title": "Survie v2"}, timeout=180)
    assert published.status_code == 201, published.text
    reply = published.json()
    assert reply["version"] == 2 and reply["published_by"] == "dana" and reply["server"] == "ready"
    (record,) = hub.api.get_group(a.slug)["properties"]["dashboards"]
    assert [v["version"] for v in record["versions"]] == [1, 2] and record["withdrawn"] is None
    assert record["versions"][0]["sha256"] != record["versions"][1]["sha256"]
    container = dashboard_container(docker_client, a.slug)
    listing = container.exec_run(["ls", f"{dashboards.MOUNT}/archive/{DASHBOARD}"]).output.split()
    assert listing == [b"v1.ipynb", b"v2.ipynb"]
    page = clinician.get(f"{hub.public_url}{a.door}", timeout=120)
    assert page.status_code == 200 and "Survie v2" in page.text


def test_opening_a_dashboard_starts_its_stopped_server(hub, docker_client, projects):
    a, _ = projects
    hub.api.request("DELETE", f"/users/dashboards/servers/{a.slug}")
    deadline = time.monotonic() + 120
    while hub.api.get_user("dashboards")["servers"].get(a.slug):
        assert time.monotonic() < deadline, "the dashboard server did not stop"
        time.sleep(0.5)
    clinician = hub.login("dclin", a.passwords["dclin"])
    deadline = time.monotonic() + 120
    while True:  # the hub answers with a page that reloads itself until the server is up
        page = clinician.get(f"{hub.public_url}{a.door}", timeout=120)
        if page.url.endswith(a.render) or time.monotonic() > deadline:
            break
        assert page.status_code == 200 and "hds-dashboard-starting" in page.text
        time.sleep(2)
    assert page.status_code == 200 and page.url.endswith(a.render)
    assert dashboard_container(docker_client, a.slug).status == "running"


def test_a_dashboard_server_without_the_guard_does_not_start(docker_client):
    """The command line names the guard; without it mounted, the server refuses to run."""
    from hdshub import dashboard_server

    image = "hdshub/python-stats:latest"
    args = [a for a in dashboard_server.server_args(0) if a.startswith("--ServerApp.jpserver_extensions")]
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
         "--tmpfs", "/home/jovyan:uid=1000,gid=1000", "--user", "1000:1000", image,
         "jupyter", "server", "--ServerApp.token=", *args],
        capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "hdshub_guard" in result.stderr


def test_kits_hide_small_counts_in_kernels(docker_client):
    from hdshub.containers import GUARD_MOUNT, GUARD_SOURCE

    script = ("import pandas as pd, hdshub_kit as k; "
              "t = pd.DataFrame({'A': [12, 3, 20], 'B': [40, 25, 22], 'C': [50, 30, 24]}, index=['x', 'y', 'z']); "
              "print(k.suppress_small_counts(t).to_dict())")
    output = docker_client.containers.run(
        "hdshub/python-stats:latest", ["python", "-c", script], remove=True, network_mode="none",
        user="1000:1000", environment={"PYTHONPATH": GUARD_MOUNT},
        volumes={str(GUARD_SOURCE): {"bind": GUARD_MOUNT, "mode": "ro"}}).decode()
    assert output.strip() == str({"A": {"x": "< 10", "y": "< 10", "z": 20}, "B": {"x": "< 10", "y": "< 10", "z": 22},
                                  "C": {"x": 50, "y": 30, "z": 24}})


def test_up_publishes_the_demo_dashboard(hub):
    if not hub.with_demo:
        pytest.skip("this machine has its own demo project: the test hub made none")
    group = hub.api.get_group("demo")
    (shown,) = dashboards.live(group["properties"]["dashboards"])
    assert shown["name"] == DASHBOARD and shown["published_by"].startswith("hdshub up")
