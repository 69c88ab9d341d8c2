"""The guard's cost on the contents API: requests/s with and without it.

Runs `hdshub up` on a throwaway state directory and starts a real project server (guarded,
as every server is, holding one raw dataset): its audit events are really delivered to the
hub and chained there, as in production. Then it starts two twins of it, containers created
from the server's own creation settings (image, command line, environment, mounts, limits,
hardening) on the project network, one with the guard and one with the guard switched off
on its command line (something the hub never does).
All three are driven directly on the project network from the host, with the same user
token: GET of a notebook (what JupyterLab does when opening one), PUT of it (a save, which
the guard traces with a sha256), and a directory listing.

Two comparisons, both against the unguarded twin: the hub's own server ("slower_percent",
what users get), and the guarded twin ("twin_slower_percent", started exactly like the
unguarded one, so only the guard differs). The hub takes a server's events from that
server's address only: the guarded twin's posts reach it from the original's address (an
iptables SNAT rule, deliver_as_the_original), so its trail is accepted and chained as in
production. Both are given, and the guard's own cost is the twins' figure: the
hub's server is always the oldest of the three (the twins are made from it), and on the
machine this was built on, of three identical servers started one after the other, the
first was the slowest (7.8 % slower than the last, 2.4 % more CPU per GET; the scheduler
kept it waiting longer). The twins are started in turn in alternate orders from one set
to the next, so that their start order cancels over an even number of sets.

Each client takes the servers in turn, request by request, so all three are loaded under
the same conditions at every moment. (Rounds of a few hundred requests, one server after
the other, moved by 13-30 % from one round to the next on that 2-core virtual machine, CPU
time per request included.) With --pin (the default with two CPUs or more) the three
servers share the last CPU and the clients and the hub the others, so that no server has a
CPU to itself by chance (unpinned, a set's listings measured anywhere from -4 % to +12 %).
Where Docker runs on fuse-overlayfs, each server's storage daemon (storage_daemon_of) goes
on the servers' CPU with it, and its CPU counts as the server's: it serves every lookup the
server makes, and left with the clients and the hub it made each server wait on them.

A slowdown compares mean latencies, which is also the ratio of the requests/s each server
gives a closed loop of clients; its uncertainty within a run is the standard error over 10
consecutive blocks. "cpu_ms_per_request" is what each container's cgroup (and its storage
daemon) counted over the same period; "hub_cpu_ms_per_request_of_the_hub_server" what the
hub (and its proxy) spent meanwhile per request to its own server: the trail is chained
there.

All this is repeated on --sets sets of servers, each started afresh: a server process keeps
differences of its own for its whole life, several percent either way (runs of 3000
requests on one pair differed from runs on another by more than their own standard
errors). Each kind's figures are the means over the sets, and their uncertainty the
standard error between sets.

Prints one JSON object. Usage: .venv/bin/python benchmarks/guard.py [--requests 2000] [--sets 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import docker
import requests
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.figures import percentile  # noqa: E402
from hdshub import demo, naming  # noqa: E402
from hdshub.usage import read_cgroup  # noqa: E402
from tests.support.hub import RunningHub, free_port  # noqa: E402

NOTEBOOK = {"cells": [{"cell_type": "code", "source": f"x = {i}", "metadata": {}, "outputs": [],
                       "execution_count": None} for i in range(50)],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


#: The servers compared, each one request at a time in turn: the hub's own server, and two
#: twins the benchmark starts the same way, with and without the guard.
VARIANTS = ("guard", "twin-guard", "twin-no-guard")
TWINS = VARIANTS[1:]
#: Requests per server before each measure.
WARM_UP = 50
#: Marks the twins, which otherwise carry the labels of the hub's server.
BENCHMARK_LABEL = "org.hdshub.benchmark-twin"


def twin(client, original, slug: str, guarded: bool):
    """A container made from the hub's server's own creation settings (`docker inspect`:
    image, command line, environment, user, mounts as DockerSpawner bound them, limits,
    hardening, labels), on the project network, started by the benchmark (never by the
    hub), with the guard on or off. Only its name and address differ, and for the unguarded
    one the switch on its command line.

    Made from the settings themselves, nothing else can differ: twins made through
    docker's higher-level API, with the same settings spelt again, still differed from the
    hub's server in a dozen (binds against mounts, attached output streams, declared
    volumes and port, automatic removal, swap limit, labels).

    Both hold the original's token and internal TLS certificate (it names the original's
    address, so the benchmark does not check host names)."""
    attrs = original.attrs
    config = {key: value for key, value in attrs["Config"].items() if key not in ("Hostname", "Domainname")}
    switch = [] if guarded else ['--ServerApp.jpserver_extensions={"hdshub_guard": False}']
    config["Cmd"] = [*attrs["Config"]["Cmd"], *switch]
    config["Labels"] = {**(config.get("Labels") or {}), BENCHMARK_LABEL: "guard" if guarded else "no-guard"}
    config["HostConfig"] = attrs["HostConfig"]
    config["NetworkingConfig"] = {"EndpointsConfig": {naming.network_name(slug): {}}}
    name = original.name + ("-guard" if guarded else "-noguard")
    created = client.api.create_container_from_config(config, name=name)
    client.api.start(created["Id"])
    return client.containers.get(created["Id"])


def ip_of(client, container, slug) -> str:
    for _ in range(100):
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][naming.network_name(slug)]["IPAddress"]
        if ip:
            return ip
        time.sleep(0.1)
    raise RuntimeError("no IP")


def deliver_as_the_original(original, twin_ip: str, original_ip: str) -> list[str]:
    """Make the guarded twin's audit posts reach the hub from the original's address, where
    the hub accepts them (the twin holds the original's token): an iptables SNAT rule on the
    host's nat INPUT chain, after the host firewall has judged the packet by its real source.
    Without it the hub refuses the twin's events and the twin does other work than a server
    whose trail is delivered (it keeps them and tries again later). Returns the rule, for
    remove_rule."""
    env = dict(item.split("=", 1) for item in original.attrs["Config"]["Env"])
    hub = urlsplit(env["JUPYTERHUB_API_URL"])
    rule = ["INPUT", "-p", "tcp", "-s", twin_ip, "-d", hub.hostname, "--dport", str(hub.port),
            "-j", "SNAT", "--to-source", original_ip]
    subprocess.run(["iptables", "-w", "-t", "nat", "-I", *rule], check=True)
    return rule


def remove_rule(rule: list[str]) -> None:
    subprocess.run(["iptables", "-w", "-t", "nat", "-D", *rule], check=True)


def storage_daemon_of(container) -> int | None:
    """The pid of the fuse-overlayfs process serving the container's root file system, None
    with another storage driver. Docker uses it where the kernel's overlay cannot serve (as on
    the machine this was built on): each container's file lookups are then served by its own
    daemon on the host, outside the container's cgroup and CPU set, and for a process that is
    not root every lookup of an absolute path is a round trip to it (measured: 30-85 µs
    against 1 µs for a relative one)."""
    merged = (container.attrs.get("GraphDriver") or {}).get("Data", {}).get("MergedDir")
    if not merged:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"fuse-overlayfs") and merged.encode() in argv:
            return int(entry)
    return None


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


def send(session: requests.Session, url: str, kind: str, notebook: str) -> None:
    target = url + f"api/contents/work/{notebook}"
    if kind == "get":
        reply = session.get(target, timeout=30)
    elif kind == "put":
        reply = session.put(target, json={"type": "notebook", "content": NOTEBOOK}, timeout=30)
    else:
        reply = session.get(url + "api/contents/work", timeout=30)
    assert reply.status_code in (200, 201), reply.text[:200]


def notebook_of(variant: str) -> str:
    """Each server saves its own copy: they share the project's work volume, and two servers
    saving one file at once race on its temporary file."""
    return f"bench-{variant}.ipynb"


def alternate(session: requests.Session, urls: dict[str, str], kind: str, per_server: int,
              workers: int) -> dict[str, list[tuple[float, float]]]:
    """{variant: [(finish time, latency in seconds)]}: each worker takes the servers in turn,
    request by request, worker w starting with server w."""
    variants = list(urls)
    latencies: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    per_worker = len(variants) * per_server // workers

    def worker(w: int) -> None:
        for i in range(per_worker):
            variant = variants[(i + w) % len(variants)]
            started = time.perf_counter()
            send(session, urls[variant], kind, notebook_of(variant))
            finished = time.perf_counter()
            latencies[variant].append((finished, finished - started))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, range(workers)))
    return latencies


def slower_percent(guard: list[float], no_guard: list[float]) -> float:
    return (statistics.mean(guard) / statistics.mean(no_guard) - 1) * 100


def block_standard_error(guard: list[tuple[float, float]], no_guard: list[tuple[float, float]],
                         blocks: int = 10) -> float:
    """Standard error of slower_percent over consecutive blocks of the run (in time order)."""
    ordered = [[lat for _, lat in sorted(pairs)] for pairs in (guard, no_guard)]
    size = min(len(x) for x in ordered) // blocks
    ratios = [slower_percent(ordered[0][b * size:(b + 1) * size], ordered[1][b * size:(b + 1) * size])
              for b in range(blocks)]
    return statistics.stdev(ratios) / blocks ** 0.5


def start_set(client, hub, api, slug: str, user: str, guarded_twin_first: bool) -> dict:
    """{variant: container}: the hub's server for the project, started afresh, then its twins
    in the order given (of identical servers, the earlier started measured slower)."""
    api.post(f"{hub.public_url}/hub/api/users/{user}/servers/{slug}", timeout=60)
    deadline = time.monotonic() + 120
    while not api.get(f"{hub.public_url}/hub/api/users/{user}", timeout=10).json()["servers"].get(slug, {}).get("ready"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the project server did not start in 120 s: see {hub.state_dir}")
        time.sleep(0.2)
    original = client.containers.get(naming.container_name(slug, user))
    twins = {variant: twin(client, original, slug, guarded=variant == "twin-guard")
             for variant in (TWINS if guarded_twin_first else TWINS[::-1])}
    return {"guard": original, **{variant: twins[variant] for variant in TWINS}}


def remove_twins(containers: dict) -> None:
    for variant in TWINS:
        containers[variant].remove(force=True)


def stop_set(client, hub, api, slug: str, user: str, containers: dict) -> None:
    remove_twins(containers)
    api.delete(f"{hub.public_url}/hub/api/users/{user}/servers/{slug}", timeout=60)
    deadline = time.monotonic() + 120
    while client.containers.list(all=True, filters={"name": naming.container_name(slug, user)}):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the project server did not stop in 120 s: see {hub.state_dir}")
        time.sleep(0.2)


def measure(session, urls: dict[str, str], containers: dict[str, str],
            daemons: dict[str, int | None], kind: str, requests_: int, workers: int,
            hub_pid: int) -> dict:
    """One kind of request on one set of servers: the hub's guarded server and the guarded
    twin each against the unguarded twin. A server's CPU is its container's cgroup and, with
    fuse-overlayfs, its storage daemon's (storage_daemon_of): all the host spends on it."""
    alternate(session, urls, kind, WARM_UP, workers)  # caches, connections
    cpu_before = {v: read_cgroup(c)[0] for v, c in containers.items()}
    daemon_before = {v: tree_cpu_ms(pid) for v, pid in daemons.items() if pid}
    hub_before = tree_cpu_ms(hub_pid)
    latencies = alternate(session, urls, kind, requests_, workers)
    hub_ms = (tree_cpu_ms(hub_pid) - hub_before) / requests_
    measured = {v: [lat for _, lat in pairs] for v, pairs in latencies.items()}
    means = {v: statistics.mean(values) for v, values in measured.items()}
    daemon = {v: (tree_cpu_ms(daemons[v]) - before) / len(latencies[v])
              for v, before in daemon_before.items()}
    cpu = {v: (read_cgroup(c)[0] - cpu_before[v]) / len(latencies[v]) / 1e6 + daemon.get(v, 0.0)
           for v, c in containers.items()}
    per_server = workers / len(urls)  # the clients each server has at every moment
    figures = {f"req_per_s_{v}": round(per_server / means[v], 1) for v in urls}
    base = "twin-no-guard"
    for v, prefix in (("guard", ""), ("twin-guard", "twin_")):
        figures[prefix + "slower_percent"] = round(slower_percent(measured[v], measured[base]), 1)
        figures[prefix + "slower_percent_standard_error"] = round(block_standard_error(latencies[v], latencies[base]), 1)
        figures[prefix + "cpu_slower_percent"] = round((cpu[v] / cpu[base] - 1) * 100, 1)
    figures.update({f"latency_ms_mean_{v}": round(means[v] * 1000, 2) for v in urls})
    figures.update({f"latency_ms_p95_{v}": round(percentile(measured[v], 95) * 1000, 2) for v in urls})
    figures.update({f"cpu_ms_per_request_{v}": round(cpu[v], 3) for v in urls})
    figures.update({f"storage_daemon_cpu_ms_per_request_{v}": round(ms, 3) for v, ms in daemon.items()})
    figures["hub_cpu_ms_per_request_of_the_hub_server"] = round(hub_ms, 3)
    return figures


def over_sets(runs: list[dict]) -> dict:
    """A kind's figures over every set: means, and the standard error between sets."""
    summary = {"target_slower_percent": 5.0}
    for key in ("slower_percent", "cpu_slower_percent", "twin_slower_percent", "twin_cpu_slower_percent"):
        values = [run[key] for run in runs]
        summary[key] = round(statistics.mean(values), 1)
        if len(values) > 1:
            summary[key + "_standard_error"] = round(statistics.stdev(values) / len(values) ** 0.5, 1)
    summary["sets"] = runs
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="per server, kind of request and set")
    parser.add_argument("--sets", type=int, default=4,
                        help="sets of servers, each started afresh (a server keeps differences of its own); "
                             "an even number lets the twins' start order cancel")
    parser.add_argument("--workers", type=int, default=len(VARIANTS),
                        help="clients; with one per server, each server has one request at a time")
    parser.add_argument("--kinds", default="get,put,list", help="among get, put, list")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2,
                        help="the servers on the last CPU, the clients and the hub on the others")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    servers_cpu = (os.cpu_count() or 1) - 1
    if args.pin:  # before the hub starts, so that it and its proxy inherit it
        if servers_cpu < 1:
            parser.error("--pin needs two CPUs or more: one for the servers, the others for the clients")
        os.sched_setaffinity(0, set(range(servers_cpu)))
    client = docker.from_env()
    hub = RunningHub(state_dir=Path(tempfile.mkdtemp(prefix="hdshub-bench-")),
                     public_url=f"https://127.0.0.1:{free_port()}", hub_port=free_port(),
                     proxy_api_port=free_port(), with_demo=False)
    hub.start()
    slug, user = "bench-guard", "bench"
    containers = snat = None
    try:
        hub.cli("project", "create", slug, "--tier", "public", "--kit", "python-stats", "--title", "bench")
        hub.add_user(user)
        hub.cli("project", "add-member", slug, user, "--role", "analyst")
        cohort = demo.write_cohort(Path(tempfile.mkdtemp(prefix="hdshub-bench-data-")) / "cohort.csv")
        hub.cli("data", "import", slug, str(cohort))
        token = hub.user_token(user)
        api = hub.as_user(token)
        session = hub.internal_session()  # the hub's certificate, as the proxy would show one
        session.verify = False  # the twins' certificate names the original server's address
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        session.headers["Authorization"] = f"token {token}"
        prefix = f"/user/{user}/{slug}/"
        runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
        traced = 0
        for index in range(args.sets):
            guarded_twin_first = index % 2 == 0
            containers = start_set(client, hub, api, slug, user, guarded_twin_first)
            daemons = {v: storage_daemon_of(c) for v, c in containers.items()}
            if args.pin:  # each server with its storage daemon, which serves its every lookup
                for variant, container in containers.items():
                    container.update(cpuset_cpus=str(servers_cpu))
                    if daemons[variant]:
                        os.sched_setaffinity(daemons[variant], {servers_cpu})
            ips = {v: ip_of(client, c, slug) for v, c in containers.items()}
            snat = deliver_as_the_original(containers["guard"], ips["twin-guard"], ips["guard"])
            urls = {v: f"https://{ip}:8888{prefix}" for v, ip in ips.items()}
            for url in urls.values():
                wait_up(url, session)
            for variant, url in urls.items():
                session.put(url + f"api/contents/work/{notebook_of(variant)}",
                            json={"type": "notebook", "content": NOTEBOOK}, timeout=30).raise_for_status()
            ids = {v: c.id for v, c in containers.items()}
            traced += 2 * (1 + sum(args.requests + WARM_UP for kind in kinds if kind != "list"))
            for kind in kinds:
                runs[kind].append({**measure(session, urls, ids, daemons, kind, args.requests,
                                             args.workers, hub.process.pid),
                                   "guarded_twin_started_first": guarded_twin_first})
            time.sleep(2)  # the guard delivers its events every second
            stop_set(client, hub, api, slug, user, containers)
            containers = None
            remove_rule(snat)
            snat = None
        trail = hub.state_dir / "audit" / f"{slug}.jsonl"
        machine = {"cpus": os.cpu_count(), "platform": platform.platform(),
                   "docker_storage_driver": client.info().get("Driver")}
        result = {"benchmark": "guard-contents-api", "machine": machine,
                  "requests_per_server_kind_and_set": args.requests, "sets": args.sets,
                  "workers": args.workers, "servers": list(VARIANTS),
                  "method": "servers taken in turn request by request, sets started afresh",
                  "servers_pinned_to_cpu": servers_cpu if args.pin else None,
                  **{kind: over_sets(runs[kind]) for kind in kinds},
                  "audit_events_written_by_the_hub": sum(1 for _ in trail.open()) if trail.exists() else 0,
                  # Both guarded servers' traced requests (reads and saves, warm-ups and the
                  # first save included): the trail holds at least as many when the twin's
                  # events were accepted too.
                  "traced_requests_to_guarded_servers": traced}
        print(json.dumps(result, indent=2))
    finally:
        if containers is not None:
            remove_twins(containers)
        if snat is not None:
            remove_rule(snat)
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
