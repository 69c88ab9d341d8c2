"""First render of the demo dashboard: cold and preheated, and 10 viewers at once.

Runs `hdshub up` on a throwaway state directory, makes a project with the synthetic cohort,
publishes the demo dashboard (templates/dashboards/demo-survie.ipynb) and logs a clinician
in through the proxy, as a browser would. Then, each time timing one GET of the dashboard
page until its last byte (the page holds every output; widgets then draw in the browser):

- preheated: a kernel that already ran the notebook is waiting (the pool is given time to
  refill between loads; the server's log confirms each load used one);
- cold: no preheated kernel is used (the page asks for another theme than the one
  pre-rendered, which is what a viewer gets when the pool is empty): start a kernel, run
  the notebook, render;
- concurrent: 10 viewers open the page at the same moment (the burst: as many preheated
  kernels as the pool holds, cold renders for the others, all on the tier's CPU), then load
  it twice more each (sustained pages per second);
- in Chromium: from navigation until the curve is drawn, preheated.

After each load the page's kernel is shut down as the page does when closed. Prints one JSON
object. Usage: .venv/bin/python benchmarks/dashboards.py [--runs 20] [--viewers 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.figures import percentile  # noqa: E402
from hdshub import demo  # noqa: E402
from tests.support.hub import RunningHub, free_port  # noqa: E402

SLUG, CLINICIAN, ANALYST = "bench-dash", "bench-clin", "bench-ana"
CONFIG = re.compile(r'<script id="jupyter-config-data" type="application/json">\s*(\{.*?\})\s*</script>', re.S)


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": round(percentile(values, 50) * 1000),
            "p95_ms": round(percentile(values, 95) * 1000), "max_ms": round(max(values) * 1000),
            "mean_ms": round(statistics.mean(values) * 1000)}


class Viewer:
    def __init__(self, hub: RunningHub, session: requests.Session):
        self.hub, self.session = hub, session
        self.base = f"{hub.public_url}/user/dashboards/{SLUG}/"

    def load(self, query: str = "") -> tuple[float, int]:
        started = time.perf_counter()
        reply = self.session.get(f"{self.base}voila/render/demo-survie.ipynb{query}", timeout=300)
        elapsed = time.perf_counter() - started
        if reply.status_code == 200:
            self.close(reply.text)
        return elapsed, reply.status_code

    def close(self, page: str) -> None:
        """What the page does when its tab closes: shut its kernel down."""
        match = CONFIG.search(page)
        kernel = json.loads(match.group(1)).get("kernelId") if match else None
        if kernel:
            xsrf = self.session.cookies.get("_xsrf", path=f"/user/dashboards/{SLUG}/") or ""
            self.session.post(f"{self.base}voila/api/shutdown/{kernel}", headers={"X-XSRFToken": xsrf}, timeout=60)


def preheated_uses(container) -> int:
    return container.logs().decode(errors="replace").count("hdshub_voila: preheated kernel")


def browser_loads(hub: RunningHub, password: str, runs: int, refill: float) -> list[float] | None:
    executable = shutil.which("chromium")
    if executable is None:
        return None
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import trusted_key_flag

    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable,
                                             args=["--no-sandbox", trusted_key_flag(hub.ca_file)])
        page = browser.new_context().new_page()
        page.goto(f"{hub.public_url}/hub/login")
        page.fill("input[name=username]", CLINICIAN)
        page.fill("input[name=password]", password)
        page.click("[type=submit]")
        page.wait_for_url(re.compile(r".*/hub/home$"))
        for _ in range(runs):
            time.sleep(refill)
            started = time.perf_counter()
            page.goto(f"{hub.public_url}/user/dashboards/{SLUG}/voila/render/demo-survie.ipynb")
            page.locator("img.hds-km[src]").wait_for(timeout=120_000)
            times.append(time.perf_counter() - started)
            page.goto("about:blank")  # the page shuts its kernel down as it leaves
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="page loads per concurrent viewer")
    parser.add_argument("--refill", type=float, default=8.0,
                        help="seconds left to the pool to prepare a new kernel between preheated loads")
    parser.add_argument("--pool", type=int, default=None,
                        help="preheated kernels per dashboard (default: ProjectSpawner.dashboard_pool_size)")
    parser.add_argument("--kernels", type=int, default=None,
                        help="kernels a dashboard server may run (default: ProjectSpawner.dashboard_kernels)")
    args = parser.parse_args()

    from hdshub.spawner import ProjectSpawner

    pool = args.pool if args.pool is not None else ProjectSpawner.dashboard_pool_size.default_value
    kernels = args.kernels if args.kernels is not None else ProjectSpawner.dashboard_kernels.default_value
    if args.pool is not None or args.kernels is not None:
        # The site's escape hatch (jupyterhub_config.d), as an operator would size the pool.
        site = Path(tempfile.mkdtemp(prefix="hdshub-bench-site-"))
        (site / "jupyterhub_config.d").mkdir()
        (site / "jupyterhub_config.d" / "dashboards.py").write_text(
            f"c.ProjectSpawner.dashboard_pool_size = {pool}\nc.ProjectSpawner.dashboard_kernels = {kernels}\n")
        os.environ["HDSHUB_CONFIG_DIR"] = str(site)

    client = docker.from_env()
    hub = RunningHub(state_dir=Path(tempfile.mkdtemp(prefix="hdshub-bench-")),
                     public_url=f"https://127.0.0.1:{free_port()}", hub_port=free_port(),
                     proxy_api_port=free_port(), with_demo=False)
    hub.start()
    try:
        hub.cli("project", "create", SLUG, "--tier", "public", "--kit", "python-stats", "--title", "bench")
        password = hub.add_user(CLINICIAN)
        hub.add_user(ANALYST)
        hub.cli("project", "add-member", SLUG, CLINICIAN, "--role", "clinician")
        hub.cli("project", "add-member", SLUG, ANALYST, "--role", "analyst")
        with tempfile.TemporaryDirectory() as tmp:
            hub.cli("data", "import", SLUG, str(demo.write_cohort(Path(tmp) / demo.DEMO_FILE)))
        notebook = demo.copy_to_work(client, SLUG, demo.DEMO_DASHBOARD)
        started = time.perf_counter()
        hub.cli("dashboard", "publish", SLUG, notebook)
        publish_seconds = time.perf_counter() - started

        session = hub.login(CLINICIAN, password)
        opened = session.get(f"{hub.public_url}/hub/dashboards/{SLUG}/demo-survie", timeout=300)
        assert opened.status_code == 200, opened.text[:300]
        viewer = Viewer(hub, session)
        (container,) = client.containers.list(filters={"label": f"org.hdshub.project={SLUG}",
                                                       "name": "dashboards"})

        preheated, missed = [], 0
        for _ in range(args.runs):
            time.sleep(args.refill)
            before = preheated_uses(container)
            elapsed, status = viewer.load()
            assert status == 200, status
            if preheated_uses(container) > before:
                preheated.append(elapsed)
            else:
                missed += 1

        cold = []
        for _ in range(args.runs):
            elapsed, status = viewer.load("?theme=cold")
            assert status == 200, status
            cold.append(elapsed)

        time.sleep(max(args.refill, 3.5 * pool))  # a full pool: about 3 CPU-seconds per kernel
        loads, lock = [], threading.Lock()

        def concurrent_viewer():
            own = requests.Session()
            own.verify, own.trust_env = session.verify, False
            own.cookies.update(session.cookies)
            mine = Viewer(hub, own)
            for round_ in range(args.rounds):
                elapsed, status = mine.load()
                with lock:
                    loads.append((round_, elapsed, status))

        threads = [threading.Thread(target=concurrent_viewer) for _ in range(args.viewers)]
        wall = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - wall
        ok = [elapsed for _, elapsed, status in loads if status == 200]
        burst = [elapsed for round_, elapsed, status in loads if round_ == 0 and status == 200]

        in_browser = browser_loads(hub, password, min(5, args.runs), args.refill)
        stats = client.api.stats(container.id, stream=False)
        result = {
            "benchmark": "dashboards",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
            "dashboard": "templates/dashboards/demo-survie.ipynb (pandas, ipywidgets, lifelines, matplotlib; 500 rows)",
            "server": {"tier": "public (1 CPU, 4 GiB)", "pool_size_per_dashboard": pool, "max_kernels": kernels,
                       "publish_and_start_seconds": round(publish_seconds, 1),
                       "memory_mib_after_runs": round(stats["memory_stats"].get("usage", 0) / 2**20)},
            "first_render_preheated": {**summary(preheated), "loads_without_a_ready_kernel": missed},
            "first_render_cold": summary(cold),
            "concurrent": {"viewers": args.viewers, "loads": len(loads), "ok": len(ok),
                           "refused_or_failed": len(loads) - len(ok), "wall_seconds": round(wall, 1),
                           "pages_per_second": round(len(ok) / wall, 2),
                           **({"burst_first_page_each": summary(burst)} if burst else {}),
                           **({"all_loads": summary(ok)} if ok else {})},
            "browser_until_curve_drawn_preheated": summary(in_browser) if in_browser else "chromium missing",
            "target_preheated_p50_ms": 500,
        }
        result["target_met"] = bool(preheated) and result["first_render_preheated"]["p50_ms"] <= 500
        print(json.dumps(result, indent=2))
    finally:
        hub.stop()
        time.sleep(1)
        for container in client.containers.list(all=True, filters={"label": f"org.hdshub.project={SLUG}"}):
            container.remove(force=True)
        for volume in client.volumes.list(filters={"label": f"org.hdshub.project={SLUG}"}):
            volume.remove(force=True)
        for network in client.networks.list(names=[f"hds-{SLUG}"]):
            network.remove()


if __name__ == "__main__":
    main()
