"""The egress guard inside a real project container, tried over HTTP through the proxy.

Every route that could hand raw data to a browser is tried, with the spellings an attacker
would use (encodings, '..', doubled slashes, case, symlinks, hard links, copies), and must
be refused with a reason in French and English. Uploads, notebook saves and kernel outputs
are held to the policy's limits (hdshub/defaults/egress.yaml).
"""

from __future__ import annotations

import base64
import re
import time
import json

import pytest
import requests

from hdshub import demo, naming
from hdshub.egress import load_egress
from tests.support.kernel_client import execute, start_kernel

from .conftest import new_slug, start_server, stop_server, wait_ready

pytestmark = pytest.mark.docker

EGRESS = load_egress()
DATA_FILE = "cohort.csv"


@pytest.fixture(scope="module")
def server(hub, docker_client, tmp_path_factory):
    """alice's running server in a project holding one raw dataset."""
    slug = new_slug()
    hub.cli("project", "create", slug, "--tier", "public", "--kit", "python-stats", "--title", "Guard")
    if hub.api.get_user("alice") is None:
        hub.add_user("alice")
    hub.cli("project", "add-member", slug, "alice", "--role", "analyst")
    data = demo.write_cohort(tmp_path_factory.mktemp("data") / DATA_FILE)
    hub.cli("data", "import", slug, str(data))
    token = hub.user_token("alice")
    session = hub.as_user(token)
    assert start_server(hub, session, "alice", slug).status_code in (201, 202)
    wait_ready(hub, session, "alice", slug)
    container = docker_client.containers.get(naming.container_name(slug, "alice"))
    url = f"{hub.public_url}/user/alice/{slug}"
    yield {"slug": slug, "session": session, "token": token, "url": url, "container": container,
           "data": data}
    stop_server(hub, session, "alice", slug)


def sh(server, script: str) -> tuple[int, str]:
    """Run a shell script in the container as the notebook user (what a terminal can do)."""
    result = server["container"].exec_run(["sh", "-c", script], user="1000", workdir="/home/jovyan")
    return result.exit_code, result.output.decode(errors="replace")


def raw_get(server, path: str) -> requests.Response:
    """GET a path exactly as written: no client-side normalisation of '..' or '//'."""
    session: requests.Session = server["session"]
    request = requests.Request("GET", server["url"] + path, headers=session.headers)
    prepared = session.prepare_request(request)
    prepared.url = server["url"] + path
    return session.send(prepared, timeout=30)


def assert_refused(reply: requests.Response, reason: str | None = None) -> None:
    """403, with the reason in French and English (JSON for APIs, a page otherwise)."""
    assert reply.status_code == 403, (reply.status_code, reply.text[:300])
    if reply.headers.get("Content-Type", "").startswith("application/json"):
        body = reply.json()
        fr, _, en = body["message"].partition(" / ")
        assert fr and en and fr != en, body
        if reason and body.get("reason"):  # the gate names it; the contents manager says it
            assert body["reason"] == reason, body
        if reason:
            expected_fr = {"raw-data": "ne quittent pas", "raw-data-copy": "copie exacte",
                           "read-too-large": "dépasse la taille", "download": "désactivés"}[reason]
            assert expected_fr in fr, body
    else:
        assert 'lang="fr"' in reply.text and 'lang="en"' in reply.text, reply.text[:300]


# -- raw data -------------------------------------------------------------------------------

def test_raw_data_names_are_listed_but_never_read(server):
    listing = raw_get(server, "/api/contents/data")
    assert listing.status_code == 200
    assert [item["name"] for item in listing.json()["content"]] == [DATA_FILE]
    metadata = raw_get(server, f"/api/contents/data/{DATA_FILE}?content=0")
    assert metadata.status_code == 200 and metadata.json()["content"] is None
    reply = raw_get(server, f"/api/contents/data/{DATA_FILE}")
    assert_refused(reply, "raw-data")
    body = reply.json()
    assert "ne quittent pas" in body["message_fr"] and "never leaves" in body["message_en"]
    for form in ("text", "base64"):
        assert_refused(raw_get(server, f"/api/contents/data/{DATA_FILE}?type=file&format={form}"))


@pytest.mark.parametrize("path", [
    "/files/data/cohort.csv",
    "/files/data/cohort.csv?download=1",
    "/view/data/cohort.csv",
    "/nbconvert/html/data/cohort.csv",
    "/api/contents/data%2Fcohort.csv",
    "/api/contents/data%252Fcohort.csv",
    "/api/contents/%64ata/cohort.csv",
    "/api/contents//data//cohort.csv",
    "/api/contents/./data/cohort.csv",
    "/api/contents/work/../data/cohort.csv",
    "/api/contents/work/%2E%2E/data/cohort.csv",
    "/api/contents/DATA/cohort.csv",
    "/api/contents/Data/cohort.csv",
    "/files/work/../data/cohort.csv",
    "/files//data/cohort.csv",
])
def test_bypass_spellings_are_refused(server, path):
    reply = raw_get(server, path)
    assert reply.status_code == 403, (path, reply.status_code, reply.text[:200])
    assert "patient_id" not in reply.text  # the data's header line never appears


def test_symlinks_from_work_to_raw_data_are_refused(server):
    code, out = sh(server, "ln -s /home/jovyan/data/cohort.csv work/abs-link.csv && "
                           "ln -s ../data/cohort.csv work/rel-link.csv && ln -s ../data work/data-dir")
    assert code == 0, out
    for path in ("work/abs-link.csv", "work/rel-link.csv", "work/data-dir/cohort.csv"):
        assert_refused(raw_get(server, f"/api/contents/{path}"))
        assert raw_get(server, f"/files/{path}").status_code == 403


def test_hard_links_to_raw_data_cannot_be_made(server):
    code, out = sh(server, "ln /home/jovyan/data/cohort.csv work/hard.csv")
    assert code != 0, out
    assert "cross-device" in out.lower() or "not permitted" in out.lower(), out


def test_exact_copies_of_raw_data_are_treated_as_raw(server):
    code, out = sh(server, "cp data/cohort.csv work/copie.csv")
    assert code == 0, out
    assert_refused(raw_get(server, "/api/contents/work/copie.csv"), "raw-data-copy")
    session = server["session"]
    copy = session.post(f"{server['url']}/api/contents/work", json={"copy_from": "data/cohort.csv"}, timeout=30)
    assert copy.status_code == 403, copy.text
    copy_dir = session.post(f"{server['url']}/api/contents/work", json={"copy_from": "data"}, timeout=30)
    assert copy_dir.status_code in (400, 403), copy_dir.text
    code, out = sh(server, "ls work")
    assert "cohort" not in out


def test_raw_data_cannot_be_renamed_deleted_or_overwritten(server):
    session, url = server["session"], server["url"]
    rename = session.patch(f"{url}/api/contents/data/{DATA_FILE}", json={"path": "work/x.csv"}, timeout=30)
    assert rename.status_code == 403
    assert session.delete(f"{url}/api/contents/data/{DATA_FILE}", timeout=30).status_code == 403
    put = session.put(f"{url}/api/contents/data/new.txt", json={"type": "file", "format": "text", "content": "x"}, timeout=30)
    assert put.status_code == 403


# -- downloads and exports ------------------------------------------------------------------

def test_downloads_and_exports_are_off_for_every_file(server):
    session, url = server["session"], server["url"]
    notebook = {"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
    assert session.put(f"{url}/api/contents/work/n.ipynb", json=notebook, timeout=30).status_code in (200, 201)
    for path in ("/files/work/n.ipynb", "/view/work/n.ipynb", "/nbconvert/html/work/n.ipynb?download=true",
                 "/nbconvert/script/work/n.ipynb"):
        assert_refused(raw_get(server, path))
    # The notebook itself still opens in JupyterLab (contents API).
    assert raw_get(server, "/api/contents/work/n.ipynb").status_code == 200


def test_lab_page_hides_download_commands(server):
    page = raw_get(server, "/lab")
    assert page.status_code == 200
    assert "@jupyterlab/filebrowser-extension:download" in page.text


# -- sizes ----------------------------------------------------------------------------------

def test_uploads_are_capped_in_size_and_kind(server):
    session, url = server["session"], server["url"]
    ok = session.put(f"{url}/api/contents/work/notes.txt", json={
        "type": "file", "format": "base64", "content": base64.b64encode(b"bonjour").decode()}, timeout=30)
    assert ok.status_code in (200, 201), ok.text
    bad_kind = session.put(f"{url}/api/contents/work/tool.exe", json={
        "type": "file", "format": "base64", "content": base64.b64encode(b"MZ").decode()}, timeout=30)
    assert bad_kind.status_code == 403 and ".exe" in bad_kind.json()["message"]
    too_big = b"a" * (EGRESS["uploads"]["max_bytes"] + 1)
    big = session.put(f"{url}/api/contents/work/big.csv", json={
        "type": "file", "format": "base64", "content": base64.b64encode(too_big).decode()}, timeout=120)
    assert big.status_code == 403 and "limite" in big.json()["message"], big.text[:300]
    code, out = sh(server, "ls work")
    assert "big.csv" not in out and "tool.exe" not in out  # nothing half-written


def test_chunked_uploads_are_capped_on_their_total(server):
    session, url = server["session"], server["url"]
    chunk = b"b" * (EGRESS["uploads"]["max_bytes"] // 2 + 1024)
    for number in (1, 2):
        reply = session.put(f"{url}/api/contents/work/chunks.csv", json={
            "type": "file", "format": "base64", "chunk": number,
            "content": base64.b64encode(chunk).decode()}, timeout=120)
        if number == 1:
            assert reply.status_code in (200, 201), reply.text[:300]
    assert reply.status_code == 403, reply.text[:300]


def test_large_notebooks_are_refused_on_save(server):
    session, url = server["session"], server["url"]
    output = {"output_type": "stream", "name": "stdout", "text": "x" * (EGRESS["notebooks"]["max_bytes"] + 10)}
    cell = {"cell_type": "code", "source": "print(table)", "metadata": {}, "execution_count": 1, "outputs": [output]}
    notebook = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    reply = session.put(f"{url}/api/contents/work/bulk.ipynb", json={"type": "notebook", "content": notebook}, timeout=120)
    assert reply.status_code == 403
    assert "Effacer les sorties" in reply.json()["message"]


def test_browser_cannot_open_files_over_the_read_limit(server):
    size = EGRESS["contents"]["max_read_bytes"] + 1
    code, out = sh(server, f"head -c {size} /dev/zero | tr '\\0' 'x' > work/large.txt")
    assert code == 0, out
    assert_refused(raw_get(server, "/api/contents/work/large.txt"), "read-too-large")


# -- kernels --------------------------------------------------------------------------------


@pytest.fixture
def kernel(server):
    """A fresh kernel, shut down after the test: the tier's kernel cap holds for the module."""
    kernel_id = start_kernel(server["session"], server["url"])
    yield kernel_id
    server["session"].delete(f"{server['url']}/api/kernels/{kernel_id}", timeout=30)


def test_large_outputs_are_cut_and_the_user_told_why(hub, server, kernel):
    limit = EGRESS["outputs"]["max_message_bytes"]
    result = execute(server["url"], server["token"], hub.ca_file, kernel, f"print('x' * {limit * 2})")
    assert "Sortie coupée" in result.stderr and "Output cut" in result.stderr
    assert "x" * 1000 not in result.stdout
    assert result.largest_message < limit
    small = execute(server["url"], server["token"], hub.ca_file, kernel, "print(6 * 7)")
    assert small.stdout.strip() == "42"


def test_kernels_cannot_read_the_servers_hub_token(hub, server, kernel):
    code = (
        "import os\n"
        "print('env', os.environ.get('JUPYTERHUB_API_TOKEN'))\n"
        "try:\n"
        "    open(f'/proc/{os.getppid()}/environ', 'rb').read(); print('environ READ')\n"
        "except OSError as e:\n"
        "    print('environ', type(e).__name__)\n"
        "try:\n"
        "    open(f'/proc/{os.getppid()}/mem', 'rb').read(1); print('mem READ')\n"
        "except OSError as e:\n"
        "    print('mem', type(e).__name__)\n"
    )
    out = execute(server["url"], server["token"], hub.ca_file, kernel, code).stdout
    assert "env None" in out
    assert "environ PermissionError" in out and "mem PermissionError" in out, out


def test_kernels_talk_to_the_server_over_unix_sockets(hub, server, kernel):
    code = "import json, glob; print(json.load(open(glob.glob('/tmp/jupyter-runtime/kernel-*.json')[0]))['transport'])"
    assert execute(server["url"], server["token"], hub.ca_file, kernel, code).stdout.strip() == "ipc"


def test_a_server_without_the_guard_does_not_start(docker_client):
    """The image requires the guard: started without its mount, the server exits."""
    container = docker_client.containers.run(
        "hdshub/python-stats:latest", ["jupyterhub-singleuser"], detach=True, network_mode="none",
        environment={"JUPYTERHUB_API_TOKEN": "x", "JUPYTERHUB_SERVICE_PREFIX": "/user/x/p/",
                     "JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api"},
    )
    try:
        status = container.wait(timeout=60)["StatusCode"]
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert status != 0, logs
    assert "hdshub_guard" in logs


# -- the network, from a kernel -------------------------------------------------------------

PROBE = r'''
import json, os, socket, ssl, urllib.request
def attempt(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "OPEN"
    except OSError as e:
        return "REFUSED " + type(e).__name__
try:
    socket.getaddrinfo("pypi.org", 443)
    dns = "RESOLVED"
except OSError:
    dns = "NO-DNS"
hub = os.environ["JUPYTERHUB_API_URL"]
# The hub API speaks internal TLS and checks the client's certificate: the server's own.
tls = ssl.create_default_context(cafile=os.environ["JUPYTERHUB_SSL_CLIENT_CA"])
tls.load_cert_chain(os.environ["JUPYTERHUB_SSL_CERTFILE"], os.environ["JUPYTERHUB_SSL_KEYFILE"])
try:
    hub_status = urllib.request.urlopen(hub + "/", timeout=5, context=tls).status
except Exception as e:
    hub_status = repr(e)
print(json.dumps({"public": attempt(*OUTSIDE["public"]), "metadata": attempt(*OUTSIDE["metadata"]),
                  "dns": dns, "hub": hub_status,
                  "host_ssh": attempt(hub.split("//")[1].split(":")[0], 22)}))
'''


def test_kernels_reach_the_hub_api_and_nothing_outside(hub, server, kernel, outside_listeners):
    """Real attempts from a kernel: a public and the metadata address, each with a listener
    an unprotected container reaches, are unreachable; outside names do not resolve, the
    host's other ports are closed, and the hub API answers."""
    code = f"OUTSIDE = {outside_listeners!r}\n" + PROBE
    result = json.loads(execute(server["url"], server["token"], hub.ca_file, kernel, code).stdout)
    assert result["public"].startswith("REFUSED") and result["metadata"].startswith("REFUSED"), result
    assert result["dns"] == "NO-DNS", result
    assert result["host_ssh"].startswith("REFUSED"), result
    assert result["hub"] == 200, result


def test_the_server_still_reports_activity_to_the_hub(hub, server):
    """The hub token left the environment for the kernels' sake; the server's own activity
    reports (which the idle culler relies on) must still be accepted."""
    deadline = time.monotonic() + 60  # the first report is sent as the server starts
    while "/users/alice/activity" not in (log := hub.hub_log(10**7)):  # the whole log
        assert time.monotonic() < deadline, "the server never reported activity"
        time.sleep(1)
    assert not re.search(r"40[13] POST /hub/api/users/alice/activity", log), log[-3000:]


def test_accesses_code_runs_and_refusals_reach_the_audit_trail(hub, server, kernel):
    """What the guard sees lands in the hub's hash-chained trail, named after who did it."""
    import hashlib

    code = "print('audited', 6 * 7)"
    assert execute(server["url"], server["token"], hub.ca_file, kernel, code).stdout.strip() == "audited 42"
    raw_get(server, "/api/contents/work/n.ipynb")
    raw_get(server, f"/api/contents/data/{DATA_FILE}")
    trail = hub.state_dir / "audit" / f"{server['slug']}.jsonl"
    deadline = time.monotonic() + 90  # the guard re-sends a refused batch with back-off
    while time.monotonic() < deadline:  # this test's own events: earlier tests left others
        events = [json.loads(line) for line in trail.read_text().splitlines()] if trail.exists() else []
        executions = [e for e in events if e["action"] == "execute"
                      and e["details"].get("sha256") == hashlib.sha256(code.encode()).hexdigest()]
        if executions and any(e["outcome"] == "refused" and DATA_FILE in e["target"] for e in events):
            break
        time.sleep(0.5)
    assert executions and executions[0]["user"] == "alice" and executions[0]["project"] == server["slug"]
    assert executions[0]["details"]["code"] == code and executions[0]["source_ip"]
    refused = [e for e in events if e["outcome"] == "refused" and DATA_FILE in e["target"]]
    assert refused and refused[0]["details"]["reason"] == "raw-data", refused
    assert hub.cli("audit", "verify", server["slug"]).returncode == 0
