"""The tier enforced while a project runs, on the small site tier of the test hub
(conftest.SMALL_TIER: 30M storage, 2 kernels, 1 server, 512M memory, 60 s idle timeout)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from hdshub import naming
from tests.support.kernel_client import execute, listen, start_kernel

from .conftest import SMALL_TIER, new_slug, start_server, stop_server, wait_ready
from .test_audit import wait_for_event

pytestmark = pytest.mark.docker
MB = 1024 * 1024


@pytest.fixture(scope="module")
def small(hub, docker_client):
    slug = new_slug()
    hub.cli("project", "create", slug, "--tier", SMALL_TIER, "--kit", "python-stats", "--title", "Quotas")
    for user, role in (("alice", "analyst"), ("bob", "analyst")):
        if hub.api.get_user(user) is None:
            hub.add_user(user)
        hub.cli("project", "add-member", slug, user, "--role", role)
    token = hub.user_token("alice")
    session = hub.as_user(token)
    assert start_server(hub, session, "alice", slug).status_code in (201, 202)
    wait_ready(hub, session, "alice", slug)
    container = docker_client.containers.get(naming.container_name(slug, "alice"))
    yield {"slug": slug, "session": session, "token": token, "container": container,
           "url": f"{hub.public_url}/user/alice/{slug}"}
    try:
        stop_server(hub, session, "alice", slug)
    except AssertionError:
        pass


def sh(small, script: str) -> str:
    result = small["container"].exec_run(["sh", "-c", script], user="1000", workdir="/home/jovyan")
    assert result.exit_code == 0, result.output.decode(errors="replace")
    return result.output.decode(errors="replace")


def restart_server(hub, small) -> None:
    """A fresh server for a test that uses it for 80 s: the tier's maximum age (150 s) would
    end the one the tests before it used (a memory hog alone has taken 60 s here)."""
    session, slug = small["session"], small["slug"]
    stop_server(hub, session, "alice", slug)
    assert start_server(hub, session, "alice", slug).status_code in (201, 202)
    wait_ready(hub, session, "alice", slug)


def test_a_second_server_over_the_tier_is_refused_with_the_tier_named(hub, small):
    bob = hub.as_user(hub.user_token("bob"))
    reply = start_server(hub, bob, "bob", small["slug"])
    assert reply.status_code == 429, reply.text
    message = reply.json()["message"]
    assert SMALL_TIER in message and "serveurs" in message and "servers" in message


def test_storage_quota_refuses_writes_warns_and_loses_nothing(small):
    session, url = small["session"], small["url"]
    notebook = {"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
    assert session.put(f"{url}/api/contents/work/analyse.ipynb", json=notebook, timeout=30).status_code in (200, 201)
    sh(small, "head -c 26214400 /dev/zero > outputs/big.bin")  # 25 MiB of 30
    time.sleep(6)  # past the guard's measurement cache
    update = session.get(f"{url}/lab/api/update", timeout=30).json()
    assert update["notification"] and "%" in update["notification"]["message"], update
    assert "utilisé à 83 %" in update["notification"]["message"]
    payload = "x" * (6 * MB)
    reply = session.put(f"{url}/api/contents/work/more.txt",
                        json={"type": "file", "format": "text", "content": payload}, timeout=60)
    assert reply.status_code == 507, reply.text[:300]
    assert "25.0 Mio" in reply.json()["message"] and "30.0 Mio" in reply.json()["message"]
    assert "more.txt" not in sh(small, "ls work")
    assert session.get(f"{url}/api/contents/work/analyse.ipynb", timeout=30).status_code == 200
    # Over quota: no new kernel until space is freed.
    sh(small, "head -c 6291456 /dev/zero > outputs/more.bin")
    time.sleep(6)
    refused = session.post(f"{url}/api/kernels", json={"name": "python3"}, timeout=60)
    assert refused.status_code == 507 and "noyau" in refused.json()["message"], refused.text
    sh(small, "rm outputs/big.bin outputs/more.bin")
    time.sleep(6)
    kernel = start_kernel(session, url)
    session.delete(f"{url}/api/kernels/{kernel}", timeout=30)


def test_kernels_per_server_are_capped(hub, small):
    session, url = small["session"], small["url"]
    kernels = [start_kernel(session, url) for _ in range(2)]
    third = session.post(f"{url}/api/kernels", json={"name": "python3"}, timeout=60)
    assert third.status_code == 403 and SMALL_TIER in third.json()["message"], third.text
    # The refusal is in the trail with its reason, like every other refusal of the guard.
    wait_for_event(hub, small["slug"], action="request", outcome="refused", target="POST api/kernels",
                   details={"reason": "too-many-kernels"})
    for kernel in kernels:
        session.delete(f"{url}/api/kernels/{kernel}", timeout=30)


def test_a_memory_hog_kernel_is_killed_the_server_lives_and_says_why(hub, small):
    session, url = small["session"], small["url"]
    kernel = start_kernel(session, url)
    assert kernel_oom_score_adj(small, kernel) == 1000
    hog = "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))\n"
    messages = listen(url, small["token"], hub.ca_file, kernel, hog,
                      until=lambda m: m.get("msg_type") == "stream" and "mémoire" in m["content"].get("text", ""),
                      timeout=120)
    notice = messages[-1]["content"]["text"]
    assert SMALL_TIER in notice and "memory" in notice
    assert session.get(f"{url}/api/status", timeout=10).status_code == 200
    # The restarted kernel is known to be starting (then idle), not "busy" like the one that
    # died computing (jupyter-server #1395): a busy kernel keeps its server from ever looking
    # idle, and websockets opened to it skip the handshake that makes sure no reply is lost.
    assert wait_for_state(session, url, kernel, ("starting", "idle")) in ("starting", "idle")
    # ... and it is again the first the OOM killer picks: the mark is per process.
    assert kernel_oom_score_adj(small, kernel) == 1000
    assert execute(url, small["token"], hub.ca_file, kernel, "print(1 + 1)").stdout.strip() == "2"
    # A restart asked for (JupyterLab's "Restart kernel") makes a new process, marked too.
    assert session.post(f"{url}/api/kernels/{kernel}/restart", timeout=60).status_code == 200
    assert kernel_oom_score_adj(small, kernel) == 1000
    session.delete(f"{url}/api/kernels/{kernel}", timeout=30)


def wait_for_state(session, url: str, kernel: str, wanted: tuple[str, ...], timeout: float = 30) -> str:
    """The kernel's state as the server reports it, once it is one of `wanted` (or the last)."""
    deadline, state = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        state = session.get(f"{url}/api/kernels/{kernel}", timeout=30).json()["execution_state"]
        if state in wanted:
            break
        time.sleep(1)
    return state


def kernel_oom_score_adj(small, kernel: str) -> int:
    """The kernel process is the one with its connection file among its arguments (this
    script too, hence the skipped own pid)."""
    script = ("import os, pathlib, sys\n"
              "for entry in pathlib.Path('/proc').glob('[0-9]*'):\n"
              "    if entry.name == str(os.getpid()):\n"
              "        continue\n"
              "    try:\n"
              "        argv = (entry / 'cmdline').read_bytes().split(b'\\0')\n"
              "        if any(a.endswith(sys.argv[1].encode()) for a in argv):\n"
              "            print((entry / 'oom_score_adj').read_text().strip())\n"
              "    except OSError:\n"
              "        pass\n")
    result = small["container"].exec_run(["python3", "-c", script, f"kernel-{kernel}.json"], user="1000")
    scores = result.output.decode().split()
    assert result.exit_code == 0 and len(scores) == 1, result.output.decode(errors="replace")
    return int(scores[0])


def test_a_server_in_use_longer_than_its_idle_timeout_is_kept(hub, small):
    """The idle culler judges a server by the activity the server reports to the hub: used
    for longer than its tier's 60 s, the server must still run, its activity known to the hub."""
    session, url, slug = small["session"], small["url"], small["slug"]
    restart_server(hub, small)
    start = time.monotonic()
    while time.monotonic() - start < 80:
        reply = session.get(f"{url}/api/contents/work", timeout=30, allow_redirects=False)
        assert reply.status_code == 200, f"stopped while in use: {reply.status_code}\n{hub.hub_log()}"
        time.sleep(5)
    server = session.get(f"{hub.public_url}/hub/api/users/alice", timeout=10).json()["servers"].get(slug)
    assert server is not None, hub.hub_log()
    reported = datetime.fromisoformat(server["last_activity"])
    # Reported every 15 s (± 10 %), the last request 5 s ago at most; JupyterHub's default
    # 5 minutes would leave the start time here, over 80 s old.
    assert datetime.now(timezone.utc) - reported < timedelta(seconds=45), server["last_activity"]


def test_a_kernel_computing_longer_than_the_idle_timeout_keeps_its_server(hub, small):
    """A kernel busy without printing for longer than the tier's 60 s is activity (the
    guard's activity.py): its server is not stopped under it, and the result comes back."""
    session, url = small["session"], small["url"]
    restart_server(hub, small)
    kernel = start_kernel(session, url)
    done = execute(url, small["token"], hub.ca_file, kernel, "import time\ntime.sleep(80)\nprint('fini')",
                   timeout=150)
    assert done.stdout.strip() == "fini", hub.hub_log()
    session.delete(f"{url}/api/kernels/{kernel}", timeout=30)


def test_an_idle_server_is_stopped_per_its_tier(hub, small):
    """60 s idle timeout: the hub's idle culler stops the server once it has reported no
    activity for that long (it checks every 15 s)."""
    session, slug = small["session"], small["slug"]
    for kernel in session.get(f"{small['url']}/api/kernels", timeout=10).json():
        session.delete(f"{small['url']}/api/kernels/{kernel['id']}", timeout=30)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        servers = session.get(f"{hub.public_url}/hub/api/users/alice", timeout=30).json()["servers"]
        if slug not in servers:
            return
        time.sleep(5)
    raise AssertionError(f"server still running after 240 s idle\n{hub.hub_log()}")
