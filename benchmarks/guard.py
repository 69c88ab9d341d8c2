"""The guard's cost on the contents API: requests/s with and without it, same container.

Runs `hdshub up` on a throwaway state directory, starts a real project server (guarded, as
every server is, holding one raw dataset), then starts a twin container from the same image,
environment, volumes, network and CPU limit but with the guard extension switched off on its
command line (something the hub never does). The guarded side is the hub's own server, so its
audit events are really delivered to the hub and chained there, as in production. Both are
driven directly on the project network from the host, with the same user token, in
interleaved rounds after one warm-up round: GET of a notebook (what JupyterLab does when
opening one), PUT of it (a save, which the guard traces with a sha256), and a directory
listing. "slower_percent" is the median over rounds of each round's own guard/no-guard ratio;
"cpu_slower_percent" compares the CPU time each container's cgroup counted per request, which
other work on the machine disturbs far less than it disturbs rates. "hub_cpu_ms_per_request"
is what the hub (and its proxy) spent meanwhile: the guard's audit events are chained and
stored there, on the same machine.

Prints one JSON object. Usage: .venv/bin/python benchmarks/guard.py [--requests 300] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import requests
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdshub import demo, naming  # noqa: E402
from hdshub.usage import read_cgroup  # noqa: E402
from tests.support.hub import RunningHub, free_port  # noqa: E402

NOTEBOOK = {"cells": [{"cell_type": "code", "source": f"x = {i}", "metadata": {}, "outputs": [],
                       "execution_count": None} for i in range(50)],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def unguarded_twin(client, guarded, slug):
    """A container like the hub's server without its guard (benchmark only).

    It holds the original's internal TLS certificate (it names the original's address, so
    the benchmark does not check host names) and the same limits, so that the only
    difference measured is the guard.
    """
    attrs = guarded.attrs
    host = attrs["HostConfig"]
    env = [e for e in attrs["Config"]["Env"] if not e.startswith("PYTHONPATH=")]
    mounts = [docker.types.Mount(m["Destination"], m["Name"], type="volume", read_only=not m["RW"])
              for m in attrs["Mounts"] if m["Type"] == "volume"]
    mounts += [docker.types.Mount(m["Destination"], m["Source"], type="bind", read_only=True)
               for m in attrs["Mounts"] if m["Type"] == "bind" and m["Destination"] == "/opt/hdshub/tls"]
    return client.containers.run(
        attrs["Config"]["Image"], [*attrs["Config"]["Cmd"], '--ServerApp.jpserver_extensions={"hdshub_guard": False}'],
        detach=True, name=guarded.name + "-noguard", user=attrs["Config"]["User"],
        environment=env, working_dir=attrs["Config"]["WorkingDir"], read_only=True,
        tmpfs=host["Tmpfs"], mounts=mounts, network=naming.network_name(slug),
        mem_limit=host["Memory"], cpu_period=host["CpuPeriod"], cpu_quota=host["CpuQuota"],
        pids_limit=host["PidsLimit"], cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
        labels={"org.hdshub.project": slug},
    )


def ip_of(client, container, slug) -> str:
    for _ in range(100):
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][naming.network_name(slug)]["IPAddress"]
        if ip:
            return ip
        time.sleep(0.1)
    raise RuntimeError("no IP")


def wait_up(url: str, session: requests.Session) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if session.get(url + "api/status", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def tree_cpu_ms(root_pid: int) -> float:
    """CPU milliseconds used so far by a process and its descendants (the hub and its proxy):
    the audit trail the guard feeds costs the hub CPU on the same machine."""
    parents, times = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = int(fields[11]) + int(fields[12])
    tree, grown = {root_pid}, True
    while grown:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grown = bool(found)
    return sum(times.get(pid, 0) for pid in tree) * 1000 / os.sysconf("SC_CLK_TCK")


def rate(session: requests.Session, url: str, kind: str, n: int, workers: int = 4,
         container_id: str | None = None, hub_pid: int | None = None) -> tuple[float, float | None, float | None]:
    """(requests per second, container CPU milliseconds per request or None, the hub's CPU
    milliseconds per request meanwhile or None)."""
    target = url + "api/contents/work/bench.ipynb"

    def one(_):
        if kind == "get":
            reply = session.get(target, timeout=30)
        elif kind == "put":
            reply = session.put(target, json={"type": "notebook", "content": NOTEBOOK}, timeout=30)
        else:
            reply = session.get(url + "api/contents/work", timeout=30)
        assert reply.status_code in (200, 201), reply.text[:200]

    cpu_before = read_cgroup(container_id) if container_id else None
    hub_before = tree_cpu_ms(hub_pid) if hub_pid else None
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - started
    cpu_after = read_cgroup(container_id) if container_id else None
    cpu_ms = (cpu_after[0] - cpu_before[0]) / n / 1e6 if cpu_before and cpu_after else None
    hub_ms = (tree_cpu_ms(hub_pid) - hub_before) / n if hub_pid else None
    return n / elapsed, cpu_ms, hub_ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    client = docker.from_env()
    hub = RunningHub(state_dir=Path(tempfile.mkdtemp(prefix="hdshub-bench-")),
                     public_url=f"https://127.0.0.1:{free_port()}", hub_port=free_port(),
                     proxy_api_port=free_port(), with_demo=False)
    hub.start()
    slug, user = "bench-guard", "bench"
    twins = []
    try:
        hub.cli("project", "create", slug, "--tier", "public", "--kit", "python-stats", "--title", "bench")
        hub.add_user(user)
        hub.cli("project", "add-member", slug, user, "--role", "analyst")
        cohort = demo.write_cohort(Path(tempfile.mkdtemp(prefix="hdshub-bench-data-")) / "cohort.csv")
        hub.cli("data", "import", slug, str(cohort))
        token = hub.user_token(user)
        api = hub.as_user(token)
        api.post(f"{hub.public_url}/hub/api/users/{user}/servers/{slug}", timeout=60)
        deadline = time.monotonic() + 120
        while not api.get(f"{hub.public_url}/hub/api/users/{user}", timeout=10).json()["servers"].get(slug, {}).get("ready"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the project server did not start in 120 s: see {hub.state_dir}")
            time.sleep(0.2)
        guarded = client.containers.get(naming.container_name(slug, user))
        twins = [unguarded_twin(client, guarded, slug)]
        session = hub.internal_session()  # the hub's certificate, as the proxy would show one
        session.verify = False  # the twins' certificate names the original server's address
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        session.headers["Authorization"] = f"token {token}"
        prefix = f"/user/{user}/{slug}/"
        urls = {"guard": f"https://{ip_of(client, guarded, slug)}:8888{prefix}",
                "no-guard": f"https://{ip_of(client, twins[0], slug)}:8888{prefix}"}
        for url in urls.values():
            wait_up(url, session)
        session.put(urls["guard"] + "api/contents/work/bench.ipynb",
                    json={"type": "notebook", "content": NOTEBOOK}, timeout=30).raise_for_status()
        figures: dict[str, dict[str, list[float]]] = {k: {"guard": [], "no-guard": []} for k in ("get", "put", "list")}
        # Each round measures both twins back to back, first one then the other, alternately:
        # the machine's own drift (disk, other guests) then weighs on both alike, and each
        # round's ratio compares like with like.
        for kind in figures:  # warm-up, not counted: first imports, caches, connections
            for variant in urls:
                rate(session, urls[variant], kind, args.requests // 5)
        containers = {"guard": guarded.id, "no-guard": twins[0].id}
        cpu: dict[str, dict[str, list[float]]] = {k: {"guard": [], "no-guard": []} for k in figures}
        hub_cpu: dict[str, dict[str, list[float]]] = {k: {"guard": [], "no-guard": []} for k in figures}
        for round_number in range(args.rounds):
            order = ("no-guard", "guard") if round_number % 2 == 0 else ("guard", "no-guard")
            for kind in figures:
                for variant in order:
                    per_second, cpu_ms, hub_ms = rate(session, urls[variant], kind, args.requests,
                                                      container_id=containers[variant], hub_pid=hub.process.pid)
                    hub_cpu[kind][variant].append(hub_ms)
                    figures[kind][variant].append(per_second)
                    if cpu_ms is not None:
                        cpu[kind][variant].append(cpu_ms)
        result = {"benchmark": "guard-contents-api", "machine": {"cpus": __import__("os").cpu_count(),
                  "platform": platform.platform()}, "requests_per_round": args.requests,
                  "rounds": args.rounds, "concurrency": 4}
        for kind, variants in figures.items():
            with_guard, without = statistics.median(variants["guard"]), statistics.median(variants["no-guard"])
            slower = sorted((1 - g / n) * 100 for g, n in zip(variants["guard"], variants["no-guard"]))
            result[kind] = {"req_per_s_guard": round(with_guard, 1), "req_per_s_no_guard": round(without, 1),
                            "slower_percent": round(statistics.median(slower), 1),
                            "slower_percent_rounds_min_max": [round(slower[0], 1), round(slower[-1], 1)],
                            # The rounds' mean and its standard error: how far the figure
                            # can be trusted on this machine.
                            "slower_percent_mean": round(statistics.mean(slower), 1),
                            "slower_percent_standard_error": round(
                                statistics.stdev(slower) / len(slower) ** 0.5, 1) if len(slower) > 1 else None,
                            "target_slower_percent": 5.0,
                            "rounds_guard": [round(v, 1) for v in variants["guard"]],
                            "rounds_no_guard": [round(v, 1) for v in variants["no-guard"]]}
            result[kind].update({f"hub_cpu_ms_per_request_{v.replace('-', '_')}": round(statistics.median(hub_cpu[kind][v]), 3)
                                 for v in ("guard", "no-guard")})
            if cpu[kind]["guard"] and cpu[kind]["no-guard"]:
                with_cpu, without_cpu = statistics.median(cpu[kind]["guard"]), statistics.median(cpu[kind]["no-guard"])
                result[kind].update({"cpu_ms_per_request_guard": round(with_cpu, 3),
                                     "cpu_ms_per_request_no_guard": round(without_cpu, 3),
                                     "cpu_slower_percent": round((with_cpu / without_cpu - 1) * 100, 1)})
        time.sleep(2)  # the guard delivers its events every second
        trail = hub.state_dir / "audit" / f"{slug}.jsonl"
        result["audit_events_written_by_the_hub"] = sum(1 for _ in trail.open()) if trail.exists() else 0
        print(json.dumps(result, indent=2))
    finally:
        for container in twins:
            container.remove(force=True)
        hub.stop()
        time.sleep(1)
        for container in client.containers.list(all=True, filters={"label": f"org.hdshub.project={slug}"}):
            container.remove(force=True)
        for volume in client.volumes.list(filters={"label": f"org.hdshub.project={slug}"}):
            volume.remove(force=True)
        for network in client.networks.list(names=[naming.network_name(slug)]):
            network.remove()


if __name__ == "__main__":
    main()
