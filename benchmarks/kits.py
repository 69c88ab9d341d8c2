"""Figures of the statistics kits, printed as JSON: image sizes, kernel start time, idle memory.

For each kit and each of its kernels, a container of the kit's image runs jupyter-server,
hardened like a project server (read-only root, in-memory /tmp and home, uid 1000, no
capability, no network). Through the server's REST API (reached with `docker exec`, since the
container has no network) one kernel is started; "kernel ready" is the time from the start
request until the kernel answers kernel_info (jupyter_client's wait_for_ready). The idle
memory is the container's memory (cgroup usage less inactive file cache) 5 s later, with the
server and that one kernel running. Runs `--runs` times per kernel (default 5).

usage: .venv/bin/python benchmarks/kits.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub_config"))
from hdshub.kits import load_kits  # noqa: E402

TOKEN = "benchmark-only-token"
KERNEL_PROBE = """
import json, sys, time, urllib.request
base = "http://127.0.0.1:8888/api"
headers = {"Authorization": "token %s", "Content-Type": "application/json"}
def call(method, path, body=None):
    request = urllib.request.Request(base + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"null")
from jupyter_client import BlockingKernelClient
from jupyter_core.paths import jupyter_runtime_dir
started = time.monotonic()
kernel = call("POST", "/kernels", {"name": sys.argv[1]})
client = BlockingKernelClient(connection_file=f"{jupyter_runtime_dir()}/kernel-{kernel['id']}.json")
client.load_connection_file()
client.start_channels()
client.wait_for_ready(timeout=60)
ready = time.monotonic() - started
client.stop_channels()
print(json.dumps({"kernel_ready_s": ready}))
""" % TOKEN
SERVER_UP = """
import time, urllib.request
for _ in range(600):
    try:
        urllib.request.urlopen("http://127.0.0.1:8888/api/status?token=%s", timeout=1)
        break
    except Exception:
        time.sleep(0.05)
else:
    raise SystemExit("jupyter-server did not answer in 30 s")
""" % TOKEN


def memory_bytes(container) -> int:
    stats = container.stats(stream=False)["memory_stats"]
    inner = stats.get("stats", {})
    cache = inner.get("inactive_file", inner.get("total_inactive_file", 0))
    return stats["usage"] - cache


def exec_python(container, code: str, *args: str) -> str:
    result = container.exec_run(["python3", "-c", code, *args], user="1000")
    if result.exit_code != 0:
        raise RuntimeError(result.output.decode(errors="replace"))
    return result.output.decode()


def measure(client, image: str, kernel: str) -> dict:
    container = client.containers.run(
        image,
        ["jupyter", "server", "--ip=127.0.0.1", "--port=8888", "--no-browser",
         f"--IdentityProvider.token={TOKEN}"],
        detach=True, user="1000:1000", read_only=True,
        tmpfs={"/tmp": "rw,nosuid,nodev,size=256m",
               "/home/jovyan": "rw,nosuid,nodev,size=64m,uid=1000,gid=1000"},
        cap_drop=["ALL"], security_opt=["no-new-privileges"], network_mode="none",
        environment={"HOME": "/home/jovyan"}, labels={"org.hdshub.benchmark": "1"},
    )
    try:
        exec_python(container, SERVER_UP)
        ready = json.loads(exec_python(container, KERNEL_PROBE, kernel))["kernel_ready_s"]
        time.sleep(5)
        return {"kernel_ready_s": ready, "idle_memory_mib": memory_bytes(container) / 2**20}
    finally:
        container.remove(force=True)


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    client = docker.from_env()
    figures: dict = {"runs": args.runs, "images": {}, "kernels": {}}
    for name in ("hdshub/base", "hdshub/base-r"):
        try:
            figures["images"][name] = round(client.images.get(f"{name}:latest").attrs["Size"] / 1e6)
        except docker.errors.ImageNotFound:
            pass
    for kit in load_kits().values():
        try:
            figures["images"][kit.image] = round(client.images.get(kit.image_tag).attrs["Size"] / 1e6)
        except docker.errors.ImageNotFound:
            figures.setdefault("not_built", []).append(kit.image_tag)
            continue
        for kernel in kit.kernels:
            runs = [measure(client, kit.image_tag, kernel) for _ in range(args.runs)]
            figures["kernels"][f"{kit.name}/{kernel}"] = {
                "kernel_ready_s": summary([run["kernel_ready_s"] for run in runs]),
                "idle_memory_mib": summary([run["idle_memory_mib"] for run in runs]),
            }
    figures["images_unit"] = "MB (10^6 bytes, as docker images shows)"
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
