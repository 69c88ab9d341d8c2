"""Cold spawn latency and idle memory of a project server, on a real hub and proxy.

Runs `hdshub up` on a throwaway state directory, creates a project and a user, then
N times: request a server through the REST API, wait until its /api/status answers 200
through the proxy (that is "ready" for a user), record the time, stop it. Then measures
the idle memory of one server with no kernel (the container's cgroup, as `docker stats`).

Prints one JSON object. Usage: .venv/bin/python benchmarks/spawn.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.figures import percentile  # noqa: E402
from hdshub import naming  # noqa: E402
from tests.support.hub import RunningHub, free_port  # noqa: E402


def wait_stopped(session, hub, user, slug):
    while slug in session.get(f"{hub.public_url}/hub/api/users/{user}", timeout=10).json().get("servers", {}):
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    client = docker.from_env()
    hub = RunningHub(
        state_dir=Path(tempfile.mkdtemp(prefix="hdshub-bench-")),
        public_url=f"https://127.0.0.1:{free_port()}", hub_port=free_port(),
        proxy_api_port=free_port(), with_demo=False,
    )
    hub.start()
    slug, user = "bench-spawn", "bench"
    try:
        hub.cli("project", "create", slug, "--tier", "public", "--kit", "python-stats", "--title", "bench")
        hub.add_user(user)
        hub.cli("project", "add-member", slug, user, "--role", "analyst")
        session = hub.as_user(hub.user_token(user))
        status_url = f"{hub.public_url}/user/{user}/{slug}/api/status"
        server_url = f"{hub.public_url}/hub/api/users/{user}/servers/{slug}"

        latencies = []
        for _ in range(args.runs):
            started = time.perf_counter()
            reply = session.post(server_url, timeout=120)
            assert reply.status_code in (201, 202), reply.text
            while True:
                try:
                    if session.get(status_url, timeout=5).status_code == 200:
                        break
                except Exception:
                    pass
                time.sleep(0.02)
            latencies.append(time.perf_counter() - started)
            session.delete(server_url, timeout=60)
            wait_stopped(session, hub, user, slug)

        # Idle memory: a ready server, no kernel, after it settles.
        session.post(server_url, timeout=120)
        while session.get(status_url, timeout=5).status_code != 200:
            time.sleep(0.1)
        time.sleep(10)
        container = client.containers.get(naming.container_name(slug, user))
        samples = []
        for _ in range(5):
            stats = container.stats(stream=False)["memory_stats"]
            cache = stats.get("stats", {}).get("total_inactive_file", stats.get("stats", {}).get("inactive_file", 0))
            samples.append((stats["usage"] - cache) / 1024**2)
            time.sleep(1)
        session.delete(server_url, timeout=60)
        wait_stopped(session, hub, user, slug)
    finally:
        hub.stop()
        for obj in client.containers.list(all=True, filters={"label": f"org.hdshub.project={slug}"}):
            obj.remove(force=True)
        for vol in client.volumes.list(filters={"label": f"org.hdshub.project={slug}"}):
            vol.remove(force=True)
        for net in client.networks.list(names=[naming.network_name(slug)]):
            net.remove()

    print(json.dumps({
        "benchmark": "spawn",
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "runs": args.runs,
        "cold_spawn_seconds": {
            "p50": round(statistics.median(latencies), 3),
            "p95": round(percentile(latencies, 95), 3),
            "max": round(max(latencies), 3),
            "min": round(min(latencies), 3),
        },
        "idle_server_memory_mib": {"median": round(statistics.median(samples), 1), "max": round(max(samples), 1)},
        "targets": {"cold_spawn_p50_seconds": 2.5, "idle_memory_mib": 120},
    }, indent=2))


if __name__ == "__main__":
    main()
