"""Study reports: time of each template on the demo data, and the overhead of a report run.

Overhead = (a report run, from the API request until the hub says it is done: one-off kit
container, papermill, HTML, PDF, provenance with the data's sha256, outputs renamed into
place) minus (the same template with the same parameters executed directly with nbclient on
the host, in a venv holding exactly the kit's locked packages, installed from the wheelhouse
`hdshub images build` filled, under the same CPU budget: the public tier's one CPU (taskset
to as many cores, and the same thread settings the container gets). `--tier private` runs
with two CPUs. Target: overhead <= 3 s.

Runs `hdshub up` on a throwaway state directory with a project holding the synthetic cohort.
Prints one JSON object. Usage: .venv/bin/python benchmarks/reports.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.figures import percentile  # noqa: E402
from hdshub import containers, demo, images, reports  # noqa: E402
from hdshub.tiers import enforced, load_tiers  # noqa: E402
from tests.support.hub import RunningHub, free_port  # noqa: E402

SLUG, STATISTICIAN = "bench-reports", "bench-stat"
REPO = Path(__file__).resolve().parents[1]
KIT_LOCK = REPO / "stats_kits" / "python-stats" / "requirements.txt"
TEMPLATES = ("descriptive", "comparison", "survival")

#: Executed by the kit venv on the host: the template, parameters injected as papermill would,
#: run by nbclient. The whole process is timed, as running the notebook directly costs it.
HOST_SCRIPT = """
import json, sys
from nbclient import NotebookClient
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook
notebook, parameters, cwd = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
nb = parameterize_notebook(load_notebook_node(notebook), parameters)
NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
"""


def kit_venv(folder: Path) -> Path:
    """A host venv with the python-stats kit's locked packages, from the wheelhouse only."""
    python = folder / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--find-links", str(images.cache_dir() / "wheels"), "-r", str(KIT_LOCK)], check=True)
    return python


def host_seconds(python: Path, template: str, parameters: dict, cwd: Path, tier_name: str) -> float:
    tier = enforced(load_tiers()[tier_name])
    env = {**os.environ, "PYTHONPATH": str(REPO / "extensions"), **containers.thread_environment(tier)}
    cores = ",".join(str(core) for core in range(max(1, math.ceil(tier["cpu"]))))
    started = time.perf_counter()
    subprocess.run(["taskset", "-c", cores, str(python), "-c", HOST_SCRIPT,
                    str(reports.templates()[template]), json.dumps(parameters), str(cwd)],
                   check=True, capture_output=True, text=True, env=env, cwd=cwd)
    return time.perf_counter() - started


def report_seconds(hub: RunningHub, template: str, parameters: dict) -> tuple[float, float, dict]:
    """(seconds from request to done, seconds until the first cell started, the runner's
    own step durations)."""
    path = f"/hdshub/reports/{SLUG}"
    started = time.perf_counter()
    run = hub.api.request("POST", path, json={"notebook": template, "parameters": parameters,
                                              "by": STATISTICIAN})
    first_cell = None
    while run["status"] in ("starting", "running"):
        time.sleep(0.1)
        run = hub.api.request("GET", f"{path}/{run['run']}")
        if first_cell is None and run["cell"]:
            first_cell = time.perf_counter() - started
    if run["status"] != "ok":
        raise RuntimeError(f"report {template} failed: {run['error']}")
    return time.perf_counter() - started, first_cell or 0.0, run["durations"]


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"n": len(values), "p50_s": round(statistics.median(ordered), 2),
            "p95_s": round(percentile(ordered, 95), 2),
            "max_s": round(ordered[-1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="runs of each template each way")
    parser.add_argument("--tier", default="public", help="the project's tier (default: %(default)s)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hdshub-bench-reports-"))
    python = kit_venv(Path(tempfile.gettempdir()) / "hdshub-bench-kit-venv")
    data = work / "data"
    data.mkdir()
    demo.write_cohort(data / demo.DEMO_FILE)

    hub = RunningHub(state_dir=work / "state", public_url=f"https://127.0.0.1:{free_port()}",
                     hub_port=free_port(), proxy_api_port=free_port(), with_demo=False)
    hub.start()
    results = {}
    try:
        hub.cli("project", "create", SLUG, "--tier", args.tier, "--kit", "python-stats", "--title", "bench")
        hub.add_user(STATISTICIAN)
        hub.cli("project", "add-member", SLUG, STATISTICIAN, "--role", "statistician")
        hub.cli("data", "import", SLUG, str(data / demo.DEMO_FILE))
        hub.api.timeout = 60
        for template in TEMPLATES:
            report, first, host, steps = [], [], [], {}
            for _ in range(args.runs):
                total, first_cell, durations = report_seconds(hub, template, {"language": "fr"})
                report.append(total)
                first.append(first_cell)
                for step, seconds in durations.items():
                    steps.setdefault(step, []).append(seconds)
                host.append(host_seconds(python, template, {"language": "fr", "data_dir": str(data)}, work,
                                         args.tier))
            overhead = [r - h for r, h in zip(report, host)]
            results[template] = {"report": summary(report), "until_first_cell": summary(first),
                                 "runner_steps": {step: summary(v) for step, v in steps.items()},
                                 "host_nbclient": summary(host), "overhead": summary(overhead),
                                 "overhead_target_s": 3.0,
                                 "overhead_within_target": statistics.median(overhead) <= 3.0}
    finally:
        hub.stop()
        import docker

        client = docker.from_env()
        for kind in ("data", "work", "outputs", "dashboards"):
            try:
                client.volumes.get(f"hds-{SLUG}-{kind}").remove(force=True)
            except docker.errors.NotFound:
                pass
    print(json.dumps({"benchmark": "reports", "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                      "tier": args.tier, "runs": args.runs, "templates": results}, indent=2))


if __name__ == "__main__":
    main()
