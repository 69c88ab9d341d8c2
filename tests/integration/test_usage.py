"""Usage for invoicing, measured on a scripted workload in a real project container: the
monthly report must match what was run within 10 %."""

from __future__ import annotations

import csv
import time
from datetime import datetime, timezone

import pytest

from hdshub import naming
from tests.support.kernel_client import execute, start_kernel

from .conftest import start_server, stop_server, wait_ready

pytestmark = pytest.mark.docker

CPU_SECONDS = 20
HOLD_SECONDS = 45
WORKLOAD = f"""
import time, numpy
block = numpy.ones(300 * 1024 * 1024 // 8)          # 300 MiB held for a moment
start = time.process_time()
while time.process_time() - start < {CPU_SECONDS}:   # CPU burnt by this kernel
    sum(range(10000))
del block
open("work/usage-test.bin", "wb").write(b"x" * 20 * 1024 * 1024)
# What the container as a whole used until now, as its own cgroup counts it (cgroup v1, v2).
try:
    total = int(open("/sys/fs/cgroup/cpuacct/cpuacct.usage").read()) / 1e9
except FileNotFoundError:
    stat = dict(line.split() for line in open("/sys/fs/cgroup/cpu.stat"))
    total = int(stat["usage_usec"]) / 1e6
print(time.process_time() - start, total)
"""


def container_started(container) -> float:
    text = container.attrs["State"]["StartedAt"]  # RFC 3339 with nanoseconds
    return datetime.strptime(text[:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()


def test_usage_report_matches_a_scripted_workload(hub, new_project, docker_client, tmp_path):
    slug = new_project({"alice": "analyst"})
    token = hub.user_token("alice")
    session = hub.as_user(token)
    assert start_server(hub, session, "alice", slug).status_code in (201, 202)
    wait_ready(hub, session, "alice", slug)
    container = docker_client.containers.get(naming.container_name(slug, "alice"))
    started = container_started(container)
    url = f"{hub.public_url}/user/alice/{slug}"
    kernel = start_kernel(session, url)
    burnt, container_cpu = map(float, execute(url, token, hub.ca_file, kernel, WORKLOAD,
                                              timeout=180).stdout.split())
    assert burnt >= CPU_SECONDS
    time.sleep(max(0.0, started + HOLD_SECONDS - time.time()))
    session.delete(f"{url}/api/kernels/{kernel}", timeout=30)
    stop_server(hub, session, "alice", slug)
    ran = time.time() - started

    month = datetime.now(timezone.utc).strftime("%Y-%m")
    deadline = time.monotonic() + 90
    while True:  # volumes are measured every ten samples, after the containers
        hub.cli("usage", "report", "--month", month, "--output", str(tmp_path))
        rows = {r["project"]: r for r in csv.DictReader((tmp_path / f"usage-{month}.csv").open())}
        row = rows[slug]
        if float(row["storage_gb_days"]) * 1024**3 * 86400 >= 20 * 1024**2 or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert float(row["server_hours"]) * 3600 == pytest.approx(ran, rel=0.10), (row, ran)
    # The container's own counter at the end of the workload; the idle server adds little after.
    assert float(row["cpu_seconds"]) == pytest.approx(container_cpu, rel=0.10), (row, container_cpu)
    assert float(row["cpu_seconds"]) >= burnt
    assert 0.29 <= float(row["peak_memory_gb"]) <= float(row["memory_limit_gb"]), row
    assert int(row["active_members"]) == 1 and row["tier"] == "public" and float(row["price_eur_ht"]) == 150
    # 20 MiB written: at least 20 MiB for a second, at most 20 MiB (plus the server's few
    # files) times the time the project has existed.
    stored = float(row["storage_gb_days"]) * 1024**3 * 86400
    assert 20 * 1024**2 <= stored <= 25 * 1024**2 * (time.time() - started), row
    (tmp_path / f"usage-{month}.html").read_text().index(slug)


def test_usage_page_is_for_operators_only(hub, new_project):
    slug = new_project({"usagereader": "analyst"})
    member = hub.login("usagereader", hub.add_user("usagereader"))  # a fresh password
    refused = member.get(f"{hub.public_url}/hub/usage", timeout=30)
    assert refused.status_code == 403 and "operators only" in refused.text
    admin = hub.login("admin", hub.admin_password)
    page = admin.get(f"{hub.public_url}/hub/usage", timeout=30)
    assert page.status_code == 200 and slug in page.text and "<svg" in page.text
    bad = admin.get(f"{hub.public_url}/hub/usage?month=2026-13", timeout=30)
    assert bad.status_code == 400 and "YYYY-MM" in bad.text
    table = admin.get(f"{hub.public_url}/hub/usage?format=csv", timeout=30)
    assert table.headers["Content-Type"].startswith("text/csv") and slug in table.text
