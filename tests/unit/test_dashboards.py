"""Dashboards without Docker: names, snapshots, records, the dashboard server's settings,
the gate in dashboard mode, the preheated pool's bookkeeping and the kits' small-count helper.

The real thing (publish, serve, refuse) is tests/integration/test_dashboards.py and
tests/browser/test_dashboards.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import nbformat
import pytest
from traitlets.config import Config

from hdshub import configurer, dashboard_server, dashboards, naming
from hdshub.auth import LocalAccountsAuthenticator
from hdshub.dashboard_hub import NoConfirmClients
from hdshub.kits import load_kits
from hdshub.policy import build as build_policy
from hdshub.projects import Project
from hdshub.settings import Settings
from hdshub.state import StateDir
from hdshub.tiers import enforced, load_tiers
from hdshub_guard import gate, paths
from hdshub_guard.policy import load as load_policy
from hdshub_kit import count_or_suppressed, hidden_cells
from hdshub_voila.pool import pooled_kernel_manager

KERNEL = "0b8f7e5c-52b5-4a3e-9d6b-3f1f2a0c9e11"


# -- the kits' small-count helper ----------------------------------------------------------

def test_counts_of_one_to_nine_are_hidden_zero_and_ten_are_not():
    assert hidden_cells([[0, 1, 9, 10]], complementary=False) == [[False, True, True, False]]
    assert [count_or_suppressed(n) for n in (0, 3, 10)] == [0, "< 10", 10]


def test_a_lone_hidden_cell_hides_its_smallest_neighbour_in_row_and_column():
    # 3 alone in its row and column: the margins would give it away.
    assert hidden_cells([[12, 3, 40], [25, 30, 0]]) == [[True, True, False], [True, True, False]]


def test_a_complement_protecting_two_lines_is_preferred():
    table = [[12, 40, 50], [3, 25, 30], [20, 22, 24]]
    assert hidden_cells(table) == [[True, True, False], [True, True, False], [False, False, False]]


def test_a_column_of_counts_hides_a_second_cell():
    assert hidden_cells([[5], [20], [30]]) == [[True], [True], [False]]


def test_nothing_small_nothing_hidden():
    assert hidden_cells([[12, 40], [25, 30]]) == [[False, False], [False, False]]


@pytest.mark.parametrize("table", [[[1.5]], [[-1]], [[None]], [["a"]]])
def test_counts_must_be_whole_and_positive(table):
    with pytest.raises(ValueError, match="whole numbers.*entiers"):
        hidden_cells(table)


def test_threshold_is_a_whole_number():
    with pytest.raises(ValueError, match="threshold"):
        hidden_cells([[1]], threshold=0)


# -- names, paths, snapshots, records --------------------------------------------------------

@pytest.mark.parametrize("name", ["survie", "survie-2026", "a1"])
def test_dashboard_names(name):
    assert dashboards.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Survie", "1survie", "survie-", "a--b", "a/b", "x" * 41, "../x"])
def test_bad_dashboard_names_are_refused_in_both_languages(name):
    with pytest.raises(dashboards.DashboardError, match="Invalid dashboard name.*Nom de tableau de bord") as error:
        dashboards.validate_name(name)
    assert error.value.status == 400


@pytest.mark.parametrize("given, path", [("work/survie.ipynb", "survie.ipynb"),
                                          ("analyses/survie.ipynb", "analyses/survie.ipynb"),
                                          ("work/a/./b.ipynb", "a/b.ipynb")])
def test_notebook_paths_stay_in_work(given, path):
    assert dashboards.notebook_path(given) == path


@pytest.mark.parametrize("given", ["", "../data/x.ipynb", "work/../../etc/x.ipynb", "/etc/x.ipynb",
                                   "work/survie.py", "work/a\nb.ipynb", "work/a\\b.ipynb"])
def test_notebook_paths_out_of_work_are_refused(given):
    with pytest.raises(dashboards.DashboardError, match="Notebook path refused"):
        dashboards.notebook_path(given)


def test_default_name_comes_from_the_file_name():
    assert dashboards.default_name("analyses/Survie 2026.ipynb") == "survie-2026"


def notebook_bytes(**metadata) -> bytes:
    notebook = nbformat.v4.new_notebook(metadata=metadata)
    cell = nbformat.v4.new_code_cell("print(1)", execution_count=3)
    cell.outputs = [nbformat.v4.new_output("stream", text="patient_id,age\n1,54\n")]
    notebook.cells = [nbformat.v4.new_markdown_cell("# Titre"), cell]
    notebook.metadata["widgets"] = {"state": {}}
    return nbformat.writes(notebook).encode()


def test_a_snapshot_has_no_outputs_and_says_who_published_it_when():
    snap, title = dashboards.snapshot(notebook_bytes(title="Survie"), "survie", None, 2, "alice",
                                      "2026-01-05T10:00:00+00:00")
    stored = nbformat.reads(snap.data.decode(), as_version=4)
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert code[0].outputs == [] and code[0].execution_count is None
    assert "widgets" not in stored.metadata
    assert title == "Survie" and stored.metadata["title"] == "Survie"
    assert stored.metadata["hdshub"] == {"dashboard": "survie", "title": "Survie", "version": 2,
                                         "published_at": "2026-01-05T10:00:00+00:00", "published_by": "alice"}
    assert snap.sha256 == hashlib.sha256(snap.data).hexdigest()
    entry = dashboards.version_entry(snap, "a/survie.ipynb", "alice", "2026-01-05T10:00:00+00:00")
    assert entry["source"] == "work/a/survie.ipynb" and entry["size"] == len(snap.data)


def test_a_title_given_at_publication_wins():
    _, title = dashboards.snapshot(notebook_bytes(title="Old"), "s", "  Nouveau  ", 1, "a", "t")
    assert title == "Nouveau"


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe", json.dumps({"cells": 3}).encode(),
                                 nbformat.writes(nbformat.v4.new_notebook()).encode()])
def test_only_notebooks_with_code_are_published(raw):
    with pytest.raises(dashboards.DashboardError) as error:
        dashboards.snapshot(raw, "s", None, 1, "a", "t")
    assert error.value.status == 400


def version(n: int) -> dict:
    return {"version": n, "sha256": f"{n:064x}", "size": 10, "source": "work/s.ipynb",
            "published_at": f"2026-01-0{n}T00:00:00+00:00", "published_by": "alice"}


def test_versions_accumulate_and_only_the_last_is_live():
    records = dashboards.with_publication([], "s", "S", version(1))
    assert dashboards.next_version(records, "s") == 2
    records = dashboards.with_publication(records, "s", "S2", version(2))
    (shown,) = dashboards.live(records)
    assert shown["version"] == 2 and shown["title"] == "S2"
    assert [v["version"] for v in records[0]["versions"]] == [1, 2]


def test_a_withdrawn_dashboard_stays_on_record_and_comes_back_as_a_new_version():
    records = dashboards.with_publication([], "s", "S", version(1))
    records = dashboards.with_withdrawal(records, "s", "bob", "2026-02-01T00:00:00+00:00")
    assert dashboards.live(records) == []
    assert records[0]["withdrawn"] == {"at": "2026-02-01T00:00:00+00:00", "by": "bob"}
    with pytest.raises(dashboards.DashboardError) as error:
        dashboards.with_withdrawal(records, "s", "bob", "t")
    assert error.value.status == 404
    records = dashboards.with_publication(records, "s", "S", version(2))
    assert dashboards.live(records)[0]["version"] == 2 and records[0]["withdrawn"] is None


def test_dashboards_survive_every_change_of_the_project_record():
    records = dashboards.with_publication([], "s", "S", version(1))
    project = Project("p", "P", "public", "python-stats", dashboards=tuple(records))
    assert Project.from_group("p", project.properties()).dashboards == project.dashboards


# -- the dashboard server ----------------------------------------------------------------------

def test_dashboard_server_keeps_the_guard_and_runs_voila_only():
    args = dashboard_server.server_args(pool_size=3, cpus=2.0)
    (extensions,) = [a for a in args if a.startswith("--ServerApp.jpserver_extensions=")]
    enabled = eval(extensions.split("=", 1)[1])  # the literal traitlets parses
    assert enabled["hdshub_guard"] is True and enabled["voila.server_extension"] is True
    assert enabled["hdshub_voila"] is True
    assert not any(enabled[name] for name in ("jupyterlab", "jupyter_server_terminals", "jupyter_lsp", "notebook_shim"))
    for setting in ("--VoilaConfiguration.strip_sources=True", "--VoilaConfiguration.show_tracebacks=False",
                    "--VoilaConfiguration.template=hdshub", "--VoilaConfiguration.file_allowlist=[]",
                    "--ServerApp.terminals_enabled=False", "--PooledKernelManager.pool_size=3",
                    "--PooledKernelManager.concurrent_preparations=2"):
        assert setting in args


def test_dashboard_server_mounts_data_and_dashboards_only(tmp_path):
    volumes = {kind: naming.volume_name("p", kind) for kind in naming.VOLUME_KINDS}
    mounts = dashboard_server.mounts(volumes, tmp_path / "p.dashboard")
    assert mounts[volumes["data"]] == "/home/jovyan/data"
    assert mounts[volumes["dashboards"]] == dashboards.MOUNT
    assert volumes["work"] not in mounts and volumes["outputs"] not in mounts
    assert dashboard_server.policy_folder("/state/policies", "p").name == "p.dashboard"


def test_dashboard_policy_is_the_guards_dashboard_mode(tmp_path):
    project = Project("p", "P", "public", "python-stats")
    from hdshub import egress, policy

    path = policy.write(tmp_path, build_policy(project, egress.load_egress(), enforced(load_tiers()["public"]),
                                               "dashboard"))
    assert load_policy(str(path)).mode == "dashboard"


@pytest.fixture
def dashboard_gate(tmp_path):
    from hdshub import egress, policy

    project = Project("p", "P", "public", "python-stats")
    path = policy.write(tmp_path / "policy", build_policy(project, egress.load_egress(),
                                                          enforced(load_tiers()["public"]), "dashboard"))
    guard_policy = load_policy(str(path))
    return gate.Gate("/user/dashboards/p/", paths.PathJudge(str(tmp_path), guard_policy), "dashboard")


def test_a_dashboard_page_may_read_its_kernel_but_not_drive_it(dashboard_gate):
    base = "/user/dashboards/p/"
    assert dashboard_gate.decide("GET", f"{base}api/kernels/{KERNEL}", "") is None
    assert dashboard_gate.decide("GET", f"{base}api/kernels/{KERNEL}/channels", "") is None
    for method, path in (("DELETE", f"api/kernels/{KERNEL}"), ("POST", f"api/kernels/{KERNEL}/restart"),
                         ("POST", f"api/kernels/{KERNEL}/interrupt"), ("POST", "api/kernels"),
                         ("GET", "api/kernels"), ("GET", "lab"), ("GET", "api/contents"),
                         ("GET", "files/data/cohorte_synthetique.csv"), ("GET", "terminals/websocket/1")):
        refusal = dashboard_gate.decide(method, base + path, "")
        assert refusal is not None and refusal.reason == "dashboard-only", (method, path)


# -- the hub's configuration -------------------------------------------------------------------

@pytest.fixture
def c(tmp_path):
    settings = Settings(state=StateDir(tmp_path).ensure(), tiers=load_tiers(), kits=load_kits(),
                        hub_ip="172.30.0.1", hub_port=8081, proxy_api_port=8001,
                        public_url="https://127.0.0.1:8000", admin_user="admin")
    config = Config()
    configurer.apply(config, settings)
    return config


def test_hub_serves_the_dashboards_api_and_page(c):
    routes = [handler[0] for handler in c.JupyterHub.extra_handlers]
    assert {r"/api/hdshub/dashboards/([^/]+)", r"/api/hdshub/dashboards/([^/]+)/([^/]+)",
            r"/dashboards/([^/]+)/([^/]+)"} <= set(routes)
    assert "/api/hdshub/audit/events" in routes


def test_only_dashboard_servers_skip_the_authorize_page(c):
    no_confirm = c.JupyterHub.tornado_settings["oauth_no_confirm_list"]
    assert isinstance(no_confirm, NoConfirmClients)
    assert "jupyterhub-user-dashboards-demo" in no_confirm
    for client in ("jupyterhub-user-alice-demo", "jupyterhub-user-dashboards-", "jupyterhub-user-dashboards-a/b",
                   "service-x"):
        assert client not in no_confirm


def test_nobody_logs_in_as_the_dashboards_owner():
    from jupyterhub.auth import Authenticator

    from hdshub.auth import NoSystemUserLogin
    from hdshub.oidc import HdsOIDCAuthenticator

    assert issubclass(LocalAccountsAuthenticator, NoSystemUserLogin)
    assert issubclass(HdsOIDCAuthenticator, NoSystemUserLogin)
    authenticator = type("Checked", (NoSystemUserLogin, Authenticator), {})(allow_all=True)
    assert authenticator.check_blocked_users(dashboards.OWNER) is False
    assert authenticator.check_blocked_users("alice") is True
    assert not authenticator.validate_username("dashboards-demo")  # would mimic its OAuth clients
    for name in (dashboards.OWNER, "dashboards-demo"):
        with pytest.raises(naming.InvalidName, match="reserved"):
            naming.validate_username(name)


# -- the preheated pool ------------------------------------------------------------------------

class FakeRenderer:
    def __init__(self, notebook):
        self.notebook_path = notebook
        self.template_name, self.theme = "hdshub", "light"
        self.stop_generator = False
        self.rendered_cache = []

    async def initialize(self):
        self.notebook = nbformat.from_dict({"metadata": {"kernelspec": {"name": "python3"}}})

    async def generate_content_hybrid(self, kernel_id, kernel):
        self.rendered_cache.append(f"<html {kernel_id}>")
        return list(self.rendered_cache), None


def fake_kernel_manager():
    from traitlets.config import LoggingConfigurable

    class Base(LoggingConfigurable):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.kernels, self.culled = {}, []

        async def start_kernel(self, *, kernel_id=None, path=None, **kwargs):
            self.started = getattr(self, "started", 0) + 1
            kernel_id = f"k{self.started}"
            self.kernels[kernel_id] = kwargs["env"]
            return kernel_id

        def __contains__(self, kernel_id):
            return kernel_id in self.kernels

        def get_kernel(self, kernel_id):
            return self.kernels[kernel_id]

        def add_restart_callback(self, kernel_id, callback, event):
            pass

        async def shutdown_kernel(self, kernel_id, *args, **kwargs):
            self.kernels.pop(kernel_id, None)

        async def cull_kernel_if_idle(self, kernel_id):
            self.culled.append(kernel_id)

        async def shutdown_all(self, *args, **kwargs):
            self.kernels.clear()

    return pooled_kernel_manager(Base)(config=Config({"PooledKernelManager": {"pool_size": 2, "refill_delay": 0}}))


def test_pool_hands_out_prerendered_kernels_and_refills():
    async def scenario():
        km = fake_kernel_manager()
        km.start_pools(FakeRenderer, {"VOILA_PREHEAT": "True"}, ["d.ipynb"])
        assert km.get_pool_size("d.ipynb") == 2
        await asyncio.sleep(0.05)
        assert km.notebook_data["d.ipynb"]["template"] == "hdshub"
        task, cache, kernel_id = await km.get_rendered_notebook("d.ipynb")
        assert cache == [f"<html {kernel_id}>"] and km.kernels[kernel_id] == {"VOILA_PREHEAT": "True"}
        await asyncio.sleep(0.05)
        assert km.get_pool_size("d.ipynb") == 2 and len(km.kernels) == 3  # refilled
        waiting = next(k for k in km.kernels if k != kernel_id)
        await km.cull_kernel_if_idle(waiting)
        await km.cull_kernel_if_idle(kernel_id)
        assert km.culled == [kernel_id]  # a kernel waiting for a viewer is never culled
        await km.shutdown_all()
        assert km.get_pool_size("d.ipynb") == 0

    asyncio.run(scenario())


def test_viewers_beyond_the_pool_queue_for_prepared_kernels():
    async def scenario():
        km = fake_kernel_manager()
        km.pool_size = 1
        km.start_pools(FakeRenderer, {}, ["d.ipynb"])
        await asyncio.sleep(0.05)
        assert km.get_pool_size("d.ipynb") == 1
        served = await asyncio.gather(*(km.get_rendered_notebook("d.ipynb") for _ in range(4)))
        assert len({kernel_id for _, _, kernel_id in served}) == 4  # one kernel each, prepared for them
        assert all(cache == [f"<html {kernel_id}>"] for _, cache, kernel_id in served)
        assert km.get_pool_size("d.ipynb") >= 1  # never 0 once known: the next viewer waits too
        await km.shutdown_all()

    asyncio.run(scenario())


def test_pool_skips_kernels_that_died_and_prepares_one_if_none_is_left():
    async def scenario():
        km = fake_kernel_manager()
        km.pool_size = 1
        km.start_pools(FakeRenderer, {}, ["d.ipynb"])
        await asyncio.sleep(0.05)
        (dead,) = list(km.kernels)
        km.kernels.pop(dead)
        _, _, kernel_id = await km.get_rendered_notebook("d.ipynb")
        assert kernel_id != dead and kernel_id in km.kernels

    asyncio.run(scenario())
