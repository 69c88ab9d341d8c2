"""The guard's rules in-process: path judgement, the gate's decisions, the contents manager.

The same jupyter-server version as the images (pinned in pyproject's test extra); the
end-to-end proof over HTTP in a real container is tests/integration/test_guard.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os

import nbformat
import pytest
from tornado import web

from hdshub import egress, policy as hub_policy
from hdshub.projects import Project
from hdshub.tiers import enforced, load_tiers
from hdshub_guard import audit, gate, messages, paths, quota
from hdshub_guard.state import GuardState, set_guard
from hdshub_guard.contents import GuardedContentsManager
from hdshub_guard.policy import PolicyError, load

RAW = b"patient_id,age\n1,54\n2,61\n"


@pytest.fixture
def root(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/cohort.csv").write_bytes(RAW)
    (tmp_path / "work").mkdir()
    (tmp_path / "work/notes.txt").write_text("hello")
    return tmp_path


@pytest.fixture
def policy(root, tmp_path_factory):
    project = Project("p", "P", "public", "python-stats", (
        {"name": "cohort.csv", "sha256": hashlib.sha256(RAW).hexdigest(), "size": len(RAW)},))
    folder = tmp_path_factory.mktemp("policy")
    tier = enforced(load_tiers()["public"])
    path = hub_policy.write(folder, hub_policy.build(project, egress.load_egress(), tier))
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    return load(str(path))


@pytest.fixture
def judge(root, policy):
    return paths.PathJudge(str(root), policy)


def test_policy_written_by_the_hub_is_read_by_the_guard(policy):
    assert policy.project == "p" and policy.mode == "notebook"
    assert ".ipynb" in policy.upload_extensions
    assert policy.dataset_sizes == {len(RAW)}


def test_a_bad_policy_stops_the_guard(tmp_path):
    with pytest.raises(PolicyError, match="cannot be read"):
        load(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "mode": "notebook", "project": "p"}))
    with pytest.raises(PolicyError, match="key 'raw_data_dir' is missing"):
        load(str(bad))
    bad.write_text(json.dumps({"version": 9}))
    with pytest.raises(PolicyError, match="version 9"):
        load(str(bad))


@pytest.mark.parametrize("spelling", [
    "data/cohort.csv", "/data/cohort.csv", "data//cohort.csv", "./data/cohort.csv",
    "work/../data/cohort.csv", "data%2Fcohort.csv", "data%252Fcohort.csv", "%64ata/cohort.csv",
    "work/%2e%2e/data/cohort.csv", "DATA/cohort.csv", "Data", "data",
])
def test_every_spelling_of_raw_data_is_raw(judge, spelling):
    assert judge.is_raw(spelling)
    assert judge.resolve(spelling)[1]  # the one-resolution path the contents manager takes


def test_one_resolution_judges_like_every_spelling(root, judge):
    os.symlink(root / "data/cohort.csv", root / "work/link.csv")
    for path in ("work/link.csv", "work\\..\\data\\cohort.csv", "work/%2e%2e/data", "work/notes.txt",
                 "work", "work/new.ipynb"):
        real, raw = judge.resolve(path)
        assert raw == judge.is_raw(path), path
        assert real == judge.os_path(path)
    assert judge.stat_named("work/../work//link.csv").st_size == len(RAW)
    assert judge.is_directory("work/./") and not judge.is_directory("work/link.csv")


def test_paths_resolve_from_the_roots_descriptor_exactly_as_realpath_does(root, judge):
    """os_path walks from descriptors (no crossing of the container's root file system per
    call) and must give realpath's answer in every case: links, '..' after a link, paths not
    made yet, dangling links, loops, a file used as a folder."""
    os.symlink(root / "data/cohort.csv", root / "work/link.csv")
    os.symlink("../data", root / "work/d")
    os.symlink(root / "data/gone.csv", root / "work/dangling.csv")
    os.symlink("loop", root / "work/loop")
    (root / "work/sub").mkdir()
    os.symlink("sub", root / "work/s")
    for path in ("", "/", "work", "work/", "work/notes.txt", "work/link.csv", "work/d/cohort.csv",
                 "work/d/../work/notes.txt", "work/s/../notes.txt", "work/new.ipynb",
                 "work/s/new.ipynb", "work/d/new.csv", "work/missing/deeper.txt",
                 "work/dangling.csv", "work/loop", "work/loop/x", "work/notes.txt/x", "work/..",
                 "work/.", "../outside", "work//notes.txt", "work/sub/"):
        assert judge.os_path(path) == os.path.realpath(os.path.join(str(root), path.lstrip("/"))), path


def test_symlinks_are_judged_by_their_target(root, judge):
    os.symlink(root / "data/cohort.csv", root / "work/link.csv")
    os.symlink("../data", root / "work/d")
    assert judge.is_raw("work/link.csv") and judge.is_raw("work/d/cohort.csv")
    assert not judge.is_raw("work/notes.txt") and not judge.is_raw("work")


def test_exact_copies_are_recognised_by_content(root, judge):
    (root / "work/copy.csv").write_bytes(RAW)
    (root / "work/other.csv").write_bytes(RAW.replace(b"54", b"55"))
    assert judge.copied_dataset(str(root / "work/copy.csv")) == "cohort.csv"
    assert judge.copied_dataset(str(root / "work/other.csv")) is None


def make_gate(judge, mode="notebook"):
    return gate.Gate("/user/alice/p/", judge, mode)


@pytest.mark.parametrize("method,path,query,reason", [
    ("GET", "/user/alice/p/api/contents/data/cohort.csv", "", "raw-data"),
    ("GET", "/user/alice/p/api/contents/data/cohort.csv", "content=1&content=0&content=1", "raw-data"),
    ("GET", "/user/alice/p/api/contents/Data/cohort.csv", "", "raw-data"),
    ("GET", "/user/alice/p/api/contents/work/../data/cohort.csv", "", "raw-data"),
    ("GET", "/user/alice/p/files/data/cohort.csv", "", "raw-data"),
    ("GET", "/user/alice/p/files/work/notes.txt", "", "download"),
    ("GET", "/user/alice/p/view/work/notes.txt", "", "download"),
    ("GET", "/user/alice/p/nbconvert/html/work/a.ipynb", "download=true", "download"),
    ("GET", "/user/alice//p/files/work/notes.txt", "", "download"),
    ("GET", "/user/alice/p/%66iles/work/notes.txt", "", "download"),
    ("PUT", "/user/alice/p/api/contents/data/new.csv", "", "write-raw-data"),
    ("DELETE", "/user/alice/p/api/contents/data/cohort.csv", "", "write-raw-data"),
    ("PATCH", "/user/alice/p/api/contents/data", "", "write-raw-data"),
])
def test_gate_refusals(judge, method, path, query, reason):
    refusal = make_gate(judge).decide(method, path, query)
    assert refusal is not None and refusal.reason == reason
    assert refusal.fr and refusal.en and refusal.fr != refusal.en


@pytest.mark.parametrize("method,path,query", [
    ("GET", "/user/alice/p/api/contents/data", ""),
    ("GET", "/user/alice/p/api/contents/data/cohort.csv", "content=0"),

    ("GET", "/user/alice/p/api/contents/work/notes.txt", ""),
    ("PUT", "/user/alice/p/api/contents/work/a.ipynb", ""),
    ("GET", "/user/alice/p/lab", ""),
    ("POST", "/user/alice/p/api/kernels", ""),
    ("GET", "/user/bob/p/files/data/cohort.csv", ""),  # not this server: tornado answers 404
])
def test_gate_lets_the_rest_through(judge, method, path, query):
    assert make_gate(judge).decide(method, path, query) is None


def test_dashboard_servers_serve_voila_only(judge):
    dashboards = make_gate(judge, "dashboard")
    for path in ("lab", "tree", "api/contents/work", "terminals/websocket/1", "files/work/a.csv",
                 "api/terminals", "api/sessions", "voilà/../lab", "api/kernels",
                 "api/kernels/abc/channels"):
        refusal = dashboards.decide("GET", f"/user/alice/p/{path}", "")
        assert refusal is not None and refusal.reason == "dashboard-only", path
    for path in ("voila/render/d.ipynb", "voila/static/main.js", "api",
                 "api/kernels/0b8f7e5c-52b5-4a3e-9d6b-3f1f2a0c9e11/channels",
                 "oauth_callback", ""):
        assert dashboards.decide("GET", f"/user/alice/p/{path}", "") is None, path


# -- the contents manager ---------------------------------------------------------------------

@pytest.fixture
def manager(root, policy, judge):
    GuardedContentsManager.guard_policy = policy
    set_guard(GuardState(policy=policy, judge=judge, audit=audit.AuditClient("http://127.0.0.1:9/hub/api", "t"),
                         base_url="/user/alice/p/", storage=quota.StorageMeter(str(root))))
    return GuardedContentsManager(root_dir=str(root))


def run(coroutine):
    return asyncio.run(coroutine)


def refused(coroutine, reason_text: str) -> None:
    with pytest.raises(web.HTTPError) as error:
        run(coroutine)
    assert error.value.status_code == 403 and reason_text in error.value.log_message


def test_manager_refuses_raw_reads_but_lists_names(manager, root):
    listing = run(manager.get("data"))
    assert [item["name"] for item in listing["content"]] == ["cohort.csv"]
    assert run(manager.get("data/cohort.csv", content=False))["content"] is None
    refused(manager.get("data/cohort.csv"), "ne quittent pas")
    (root / "work/copy.csv").write_bytes(RAW)
    refused(manager.get("work/copy.csv"), "copie exacte")
    refused(manager.copy("data/cohort.csv", "work"), "ne quittent pas")
    refused(manager.copy("data", "work"), "ne quittent pas")
    refused(manager.rename("data/cohort.csv", "work/x.csv"), "lecture seule")
    assert run(manager.get("work/notes.txt"))["content"] == "hello"


def test_writes_through_a_link_to_raw_data_are_refused_though_the_gate_lets_them_by(manager, root, judge):
    """The gate leaves spellings that cannot name data/ to the contents manager: every write
    method must then judge the resolved path itself."""
    os.symlink(root / "data", root / "work/link")
    assert make_gate(judge).decide("PUT", "/user/alice/p/api/contents/work/link/x.csv", "") is None
    text = {"type": "file", "format": "text", "content": "x"}
    refused(manager.save(text, "work/link/x.csv"), "lecture seule")
    refused(manager.save(text, "work/link/cohort.csv"), "lecture seule")
    refused(manager.delete("work/link/cohort.csv"), "lecture seule")
    refused(manager.rename("work/notes.txt", "work/link/notes.txt"), "lecture seule")
    refused(manager.new(path="work/link/n.txt"), "lecture seule")
    refused(manager.copy("work/link/cohort.csv", "work"), "ne quittent pas")
    assert os.listdir(root / "data") == ["cohort.csv"] and (root / "work/notes.txt").exists()


def test_the_trail_takes_the_managers_word_for_what_was_read(root, judge):
    assert audit.describe("GET", "api/contents/work/notes.txt", 200, "", b"", judge.is_directory,
                          None, "directory") is None
    assert audit.describe("GET", "api/contents/work", 200, "", b"", judge.is_directory,
                          None, "file")[0] == "contents-read"
    assert audit.describe("GET", "api/contents/work", 200, "", b"", judge.is_directory) is None


@pytest.mark.parametrize("target, refusal", [("data/cohort.csv", "ne quittent pas"),
                                              ("work/copy.csv", "copie exacte")])
def test_a_link_swapped_after_the_check_still_reads_nothing_raw(manager, root, monkeypatch, target, refusal):
    """A kernel may swap a link between the server's checks of the path and its open (a
    race it can retry at will): the file actually opened is what is judged."""
    (root / "work/copy.csv").write_bytes(RAW)
    link = root / "work/swap.txt"
    os.symlink(root / "work/notes.txt", link)
    exists = GuardedContentsManager.exists

    def check_then_swap(self, path):
        found = exists(self, path)  # the server's first look: the link names notes.txt now
        os.remove(link)
        os.symlink(root / target, link)
        return found

    monkeypatch.setattr(GuardedContentsManager, "exists", check_then_swap)
    refused(manager.get("work/swap.txt"), refusal)
    refused(manager.get("work/swap.txt", type="file", format="base64"), refusal)


def test_a_notebooks_size_is_its_bytes_on_disk_so_what_was_saved_opens_again(manager, root, policy):
    """notebooks.max_bytes counts the file nbformat writes (indented), the measure the read
    limit uses: a notebook whose compact JSON is under the limit but whose file would be over
    it is refused, and leaves the saved one as it was; one just under opens again. The same
    bytes are hashed for the trail and counted in the storage quota."""
    from hdshub_guard.contents import written_sha256

    object.__setattr__(policy, "notebook_max_bytes", 20_000)
    object.__setattr__(policy, "read_max_bytes", 20_000)

    def notebook(lines: int) -> dict:
        # Many short lines: nbformat's indentation adds more to the file than to compact JSON.
        return {"cells": [{"id": "c1", "cell_type": "markdown", "metadata": {}, "source": ["a\n"] * lines}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}

    def compact(lines: int) -> int:
        return len(json.dumps(notebook(lines), separators=(",", ":")).encode())

    async def save(model, path):
        await manager.save(model, path)
        return written_sha256.get()

    run(manager.save({"type": "notebook", "content": notebook(10)}, "work/n.ipynb"))
    kept = (root / "work/n.ipynb").read_bytes()
    over = next(n for n in range(100, 5_000, 10)
                if compact(n) < 15_000 and len(nbformat.writes(nbformat.from_dict(notebook(n)))) > 20_000)
    assert compact(over) < policy.notebook_max_bytes  # the old, compact measure let it by
    refused(manager.save({"type": "notebook", "content": notebook(over)}, "work/n.ipynb"), "Effacer les sorties")
    assert (root / "work/n.ipynb").read_bytes() == kept

    under = max(n for n in range(10, over, 10)
                if len(nbformat.writes(nbformat.from_dict(notebook(n)))) + 1 <= 20_000)
    digest = run(save({"type": "notebook", "content": notebook(under)}, "work/n.ipynb"))
    on_disk = (root / "work/n.ipynb").read_bytes()
    assert 19_000 < len(on_disk) <= 20_000 and digest == hashlib.sha256(on_disk).hexdigest()
    reopened = run(manager.get("work/n.ipynb"))
    assert len(reopened["content"]["cells"][0]["source"]) > 0

    object.__setattr__(policy, "storage_bytes", len(on_disk) + 100)
    from hdshub_guard.state import guard
    guard().storage = quota.StorageMeter(str(root))
    with pytest.raises(web.HTTPError) as error:  # a new notebook of that size: over the quota
        run(manager.save({"type": "notebook", "content": notebook(under)}, "work/m.ipynb"))
    assert error.value.status_code == 507 and not (root / "work/m.ipynb").exists()


def test_a_large_raw_file_behind_a_link_is_refused_as_raw_data_not_for_its_size(manager, root, policy, monkeypatch):
    """Raw data is judged on the opened file; a file too large to open is refused before,
    and when it is raw data the refusal says so (the user learns the rule, not a size)."""
    big = root / "data/big.csv"
    big.write_bytes(b"a" * (policy.read_max_bytes + 1))
    os.symlink(big, root / "work/big-link.csv")
    refused(manager.get("work/big-link.csv"), "ne quittent pas")
    (root / "work/big-own.csv").write_bytes(b"a" * (policy.read_max_bytes + 1))
    refused(manager.get("work/big-own.csv"), "dépasse la taille")


def test_a_file_too_large_to_open_can_still_be_hashed_but_raw_data_cannot(manager, root, policy):
    """The size limit is the browser's: a read made only to hash a file (JupyterLab asks
    content=0&hash=1 to detect changes on disk) gives no content and is answered; raw data
    is refused whatever the read is for."""
    data = b"a" * (policy.read_max_bytes + 1)
    (root / "work/big-own.csv").write_bytes(data)
    model = run(manager.get("work/big-own.csv", content=False, require_hash=True))
    assert model["hash"] == hashlib.sha256(data).hexdigest() and model["content"] is None
    refused(manager.get("work/big-own.csv", content=True), "dépasse la taille")
    refused(manager.get("data/cohort.csv", content=False, require_hash=True), "ne quittent pas")


def test_case_tricks_are_judged_on_the_first_folder_under_the_root_only(judge, root):
    (root / "work/Data").mkdir()
    assert judge.is_raw_real(str(root / "DATA/x.csv")) and judge.is_raw_real(str(root / "data"))
    assert not judge.is_raw_real(str(root / "work/Data/x.csv"))
    assert not judge.is_raw_real(str(root.parent / "data/x.csv"))  # outside the root
    assert not judge.is_raw_real(str(root))


def test_manager_caps_uploads_notebooks_and_reads(manager, root, policy):
    def upload(name, data, **extra):
        return manager.save({"type": "file", "format": "base64",
                             "content": base64.b64encode(data).decode(), **extra}, f"work/{name}")

    run(upload("ok.csv", b"a,b\n"))
    refused(upload("x.exe", b"MZ"), "« .exe »")
    refused(upload("big.csv", b"a" * (policy.upload_max_bytes + 1)), "dépasse la limite")
    assert not (root / "work/big.csv").exists()
    half = b"a" * (policy.upload_max_bytes // 2 + 10)
    run(upload("chunked.csv", half, chunk=1))
    refused(upload("chunked.csv", half, chunk=-1), "dépasse la limite")
    for chunk in (2, -1):  # a client starting anywhere but chunk 1 is held to the same kinds
        refused(upload(f"late{chunk}.exe", b"MZ", chunk=chunk), "« .exe »")
        assert not (root / f"work/late{chunk}.exe").exists()
    notebook = {"cells": [{"id": "c1", "cell_type": "markdown", "metadata": {},
                           "source": "x" * (policy.notebook_max_bytes + 1)}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    refused(manager.save({"type": "notebook", "content": notebook}, "work/n.ipynb"), "Effacer les sorties")
    (root / "work/large.txt").write_bytes(b"x" * (policy.read_max_bytes + 1))
    refused(manager.get("work/large.txt"), "dépasse la taille")


def test_requests_worth_tracing(root, judge):
    def describe(method, path, query="", body=b""):
        return audit.describe(method, path, 200, query, body, judge.is_directory, "ab" * 32)

    assert describe("GET", "api/contents/work/notes.txt")[0] == "contents-read"
    assert describe("GET", "api/contents/work") is None  # a listing carries no data
    assert describe("GET", "api/contents/work/notes.txt", "content=0") is None
    action, target, details = describe("PUT", "api/contents/work/notes.txt")
    assert (action, details["sha256"]) == ("contents-write", "ab" * 32)
    assert describe("PATCH", "api/contents/work/a", body=b'{"path": "work/b"}')[2] == {"new_path": "work/b"}
    assert describe("POST", "api/kernels")[0] == "kernel-start"
    assert describe("POST", "api/terminals")[0] == "terminal-start"
    assert describe("GET", "lab") is None


def test_a_save_records_the_sha256_of_what_it_wrote(manager, root):
    from hdshub_guard.contents import written_sha256

    async def save(model, path):
        await manager.save(model, path)
        return written_sha256.get()

    digest = run(save({"type": "file", "format": "text", "content": "résultat\n"}, "work/r.txt"))
    assert digest == hashlib.sha256("résultat\n".encode()).hexdigest()
    notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    digest = run(save({"type": "notebook", "content": notebook}, "work/n.ipynb"))
    assert digest == hashlib.sha256((root / "work/n.ipynb").read_bytes()).hexdigest()
    first = run(save({"type": "file", "format": "base64", "chunk": 1,
                      "content": base64.b64encode(b"a,b\n").decode()}, "work/u.csv"))
    assert first is None  # mid-upload: no file to vouch for yet


def test_code_events_keep_a_digest_and_an_excerpt():
    event = audit.code_event("x = 1\n" * 2000)
    assert event["length"] == 12000 and len(event["code"]) == audit.CODE_EXCERPT
    assert event["sha256"] == hashlib.sha256(("x = 1\n" * 2000).encode()).hexdigest()


def test_every_refusal_speaks_both_languages():
    for reason in messages.TEXTS:
        values = {"size": "1 o", "limit": "2 o", "ext": ".x", "allowed": ".y", "name": "n",
                  "used": "3 o", "tier": "public", "percent": 85, "count": 4}
        refusal = messages.refusal(reason, **values)
        assert refusal.fr != refusal.en and " / " in refusal.text


def test_storage_quota_refuses_writes_that_would_go_over_and_keeps_what_exists(manager, root, policy):
    """Measured on the folders themselves; a refused save leaves the old file intact (507)."""
    object.__setattr__(policy, "storage_bytes", 10_000)
    quota_state = quota.StorageMeter(str(root))
    from hdshub_guard.state import guard
    guard().storage = quota_state
    (root / "outputs").mkdir()
    (root / "outputs/table.csv").write_bytes(b"x" * 7_000)
    run(manager.save({"type": "file", "format": "text", "content": "y" * 2_000}, "work/a.txt"))
    with pytest.raises(web.HTTPError) as error:
        run(manager.save({"type": "file", "format": "text", "content": "z" * 3_000}, "work/a.txt"))
    assert error.value.status_code == 507 and "Quota de stockage" in error.value.log_message
    assert (root / "work/a.txt").read_text() == "y" * 2_000
    # Shrinking a file is always allowed, even over quota.
    run(manager.save({"type": "file", "format": "text", "content": "y"}, "work/a.txt"))
    assert quota.storage_warning(guard()) is None  # 7 kB of 10 kB: under 80 %
    run(manager.save({"type": "file", "format": "text", "content": "w" * 1_500}, "work/b.txt"))
    warning = quota.storage_warning(guard())
    assert "85 %" in warning and "public" in warning, warning


def test_folder_size_counts_each_file_once(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 100)
    os.link(tmp_path / "a", tmp_path / "b")
    os.symlink("/etc/passwd", tmp_path / "c")
    (tmp_path / "d").mkdir()
    (tmp_path / "d/e").write_bytes(b"x" * 50)
    assert quota.folder_size(str(tmp_path)) == 150


# -- the output budget of kernels and terminals -----------------------------------------------

class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_output_budget_caps_each_message_and_the_rate_over_a_window():
    from hdshub_guard.kernels import OutputBudget

    clock = Clock()
    budget = OutputBudget(max_message_bytes=1000, bytes_per_second=100, window=3.0, clock=clock)
    assert budget.judge(1001) == "cut"
    assert budget.judge(200) is None and budget.judge(100) is None  # 300 bytes: the window's all
    assert budget.judge(1) == "rate"
    assert budget.first_time("rate") and not budget.first_time("rate")  # told once per pause
    clock.now += 3.0
    assert budget.judge(300) is None  # the window slid: output flows again...
    assert budget.judge(1) == "rate" and budget.first_time("rate")  # ...and a new pause is told


def test_messages_the_browser_waits_for_are_rebuilt_without_the_kernels_text():
    from hdshub_guard.kernels import cut_content

    notice, secret = "Sortie coupée / Output cut", "patient_id,age\n1,54"
    failed = cut_content("execute_reply", {"status": "error", "execution_count": 7, "ename": secret,
                                           "evalue": secret, "traceback": [secret]}, notice)
    assert failed == {"status": "error", "execution_count": 7, "user_expressions": {}, "payload": [],
                      "ename": "OutputCut", "evalue": notice, "traceback": [notice]}
    ok = cut_content("execute_reply", {"status": "ok", "execution_count": "x" * 9,
                                       "user_expressions": {secret: {"data": secret}}}, notice)
    assert ok == {"status": "ok", "execution_count": 0, "user_expressions": {}, "payload": []}
    assert cut_content("inspect_reply", {"data": {"text/plain": secret}}, notice)["data"] == {"text/plain": notice}
    assert cut_content("status", {"execution_state": secret}, notice) == {"execution_state": "idle"}
    assert cut_content("input_request", {"prompt": secret, "password": "yes"}, notice) == {
        "prompt": f"{notice} > ", "password": False}
    unknown = cut_content("create_subshell_reply", {"subshell_id": secret}, notice)
    assert unknown["status"] == "error" and secret not in json.dumps(unknown)
    info = {"status": "ok", "protocol_version": "5.3"}
    assert cut_content("kernel_info_reply", {"banner": secret}, notice, kernel_info=info) == info


class ProbeConnection:
    """A GuardedKernelConnection without its server: what it forwards, sends and records."""

    def __new__(cls, policy, budget):
        from jupyter_client.session import Session
        from hdshub_guard import kernels

        class Probe(kernels.GuardedKernelConnection):
            def __init__(self):
                self.session = Session()
                self._budget = budget
                self._waiting = {}
                self._kernel_info = None
                self.forwarded, self.sent, self.told, self.cuts = [], [], [], []

            def _forward(self, stream, msg_list):
                self.forwarded.append(self.session.deserialize(self.session.feed_identities(msg_list)[1]))

            def _send(self, channel, msg_type, content, parent_header):
                self.sent.append((channel, msg_type, content, parent_header))

            def write_stderr(self, text, parent_header):
                self.told.append((text, parent_header))

            def _record_cut(self, reason, size, channel, msg_type):
                self.cuts.append((reason, msg_type))

        return Probe()


def kernel_message(session, msg_type, content, parent):
    return session.serialize(session.msg(msg_type, content=content, parent=parent))


def test_every_kernel_message_keeps_to_the_budget_and_waited_answers_still_come(manager, policy, monkeypatch):
    from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
    from hdshub_guard.kernels import OutputBudget

    monkeypatch.setattr(ZMQChannelsWebsocketConnection, "handle_outgoing_message",
                        lambda self, stream, msg_list: self._forward(stream, msg_list))
    clock = Clock()
    connection = ProbeConnection(policy, OutputBudget(policy.output_max_message_bytes, 10_000, clock=clock))
    request = {"msg_id": "r1", "msg_type": "execute_request", "session": "s", "username": "alice",
               "date": "", "version": "5.3", "junk": "x" * 100}
    connection._expect(request)
    kernel = connection.session
    big = "y" * (policy.output_max_message_bytes + 1)

    def out(channel, msg_type, content, parent=request):
        connection.handle_outgoing_message(channel, kernel_message(kernel, msg_type, content, parent))

    out("iopub", "status", {"execution_state": "busy"})
    out("iopub", "comm_msg", {"comm_id": "c", "data": {"rows": big}})  # over the cap: dropped
    out("shell", "execute_reply", {"status": "error", "execution_count": 3, "evalue": big, "traceback": [big]})
    out("shell", "execute_reply", {"status": "ok", "execution_count": 4})  # a second reply: not waited for
    for _ in range(5):  # 30 kB over a window of 10 kB/s * 3 s: the rest is over the rate
        out("iopub", "stream", {"name": "stdout", "text": "z" * 6_000})
    budget = connection._budget
    assert budget.judge(budget.window_bytes - budget._sent_bytes) is None  # the window spent
    out("iopub", "status", {"execution_state": "idle"})
    forwarded = [m["msg_type"] for m in connection.forwarded]
    assert forwarded[0] == "status" and "comm_msg" not in forwarded and forwarded.count("stream") < 5
    assert forwarded.count("execute_reply") == 1
    sent = {msg_type: (content, parent) for _channel, msg_type, content, parent in connection.sent}
    reply, parent = sent["execute_reply"]
    assert reply["evalue"].startswith("Sortie coupée") and "y" * 100 not in json.dumps(reply)
    assert parent["msg_id"] == "r1" and "junk" not in parent  # the request's own header, trimmed
    assert sent["status"][0] == {"execution_state": "idle"}  # the cell finishes
    assert "r1" not in connection._waiting  # answered: forgotten
    assert ("output-cut", "comm_msg") in connection.cuts and ("output-cut", "execute_reply") in connection.cuts
    assert [text for text, _ in connection.told if "Sorties suspendues" in text] != []
    assert all(parent.get("msg_id") == "r1" for _, parent in connection.told)  # never the kernel's


def test_execution_requests_record_their_user_expressions():
    from hdshub_guard.kernels import expressions_event

    event = expressions_event({"t": "open('data/cohort.csv').read()"})
    assert "open('data/cohort.csv')" in event["user_expressions"]
    assert len(event["user_expressions_sha256"]) == 64


def test_the_debugger_is_not_among_the_messages_a_notebook_may_send():
    from hdshub_guard.kernels import NOTEBOOK_MESSAGE_TYPES

    assert "debug_request" not in NOTEBOOK_MESSAGE_TYPES
    assert {"execute_request", "comm_msg", "input_reply", "kernel_info_request"} <= set(NOTEBOOK_MESSAGE_TYPES)


@pytest.fixture
def term_socket(manager):
    from hdshub_guard import terminals

    socket = object.__new__(terminals.GuardedTermSocket)
    socket._budget = terminals.OutputBudget(1000, 100, clock=Clock())
    socket._typed = ""
    socket.shown, socket.typed, socket.records = [], [], []
    socket.send_json_message = socket.shown.append
    socket._record_input = socket.typed.append
    socket._record = lambda action, **details: socket.records.append((action, details))
    return socket


def test_terminal_input_is_recorded_per_line(term_socket):
    from hdshub_guard import audit as guard_audit

    for key in "cat da\t":
        term_socket._trace_input(key)
    assert term_socket.typed == []
    term_socket._trace_input("\r")
    term_socket._trace_input("head work/a.csv\rwc -l wo")
    assert term_socket.typed == ["cat da\t\r", "head work/a.csv\r"]
    term_socket._trace_input("x" * guard_audit.CODE_EXCERPT)  # a paste with no line end
    assert len(term_socket.typed) == 3 and len(term_socket.typed[2]) == guard_audit.CODE_EXCERPT


def test_terminal_output_keeps_to_the_budget_and_the_user_is_told_once(term_socket):
    term_socket.on_pty_read("a" * 200)
    term_socket.on_pty_read("b" * 200)  # over 100 B/s * 3 s
    term_socket.on_pty_read("c" * 150)  # still over: not told again
    term_socket.on_pty_read("d" * 5000)  # a reconnection's scrollback, over the cap
    texts = [text for _kind, text in term_socket.shown]
    assert texts[0] == "a" * 200 and not any(c * 100 in t for t in texts[1:] for c in "bcd")
    assert sum("Terminal output paused" in t for t in texts) == 1
    assert sum("Sortie du terminal coupée" in t for t in texts) == 1
    assert [d["reason"] for _, d in term_socket.records] == ["terminal-output-rate", "terminal-output-cut"]


def test_the_terminal_route_is_served_by_the_guarded_socket():
    from jupyter_server_terminals.handlers import TermSocket
    from tornado import httputil
    from tornado.httputil import HTTPServerRequest
    from hdshub_guard import terminals

    app = web.Application()
    app.add_handlers(".*$", [(r"/user/a/p/terminals/websocket/(\w+)", TermSocket, {"term_manager": None})])
    assert terminals._swap(app.default_router, TermSocket, terminals.GuardedTermSocket) == 1
    request = HTTPServerRequest(start_line=httputil.RequestStartLine("GET", "/user/a/p/terminals/websocket/1", "HTTP/1.1"),
                                headers=httputil.HTTPHeaders({"Host": "h"}))
    delegate = app.find_handler(request)
    assert delegate.handler_class is terminals.GuardedTermSocket
    assert delegate.handler_kwargs == {"term_manager": None}


def test_a_flush_sends_what_was_queued_and_leaves_newer_events_for_the_next():
    """A busy server keeps queueing while a batch is on its way: posting until the queue is
    empty made one TLS connection per handful of events."""

    class Hub:
        def __init__(self, client):
            self.client, self.posts = client, []

        def post(self, body):
            self.posts.append(len(json.loads(body)["events"]))
            for _ in range(30):  # events made while the hub answers
                self.client.record("alice", "contents-read", "work/a.csv")
            return 201, b""

    client = audit.AuditClient("http://127.0.0.1:9/hub/api", "t")
    hub = client.hub = Hub(client)
    for _ in range(2050):
        client.record("alice", "contents-read", "work/a.csv")
    run(client.flush())
    assert hub.posts == [audit.BATCH_EVENTS, audit.BATCH_EVENTS, 50]
    assert len(client.queue) == 90  # waiting for the next flush, none lost
    run(client.flush())
    assert hub.posts[3:] == [90] and len(client.queue) == 30


def test_batches_of_long_events_stay_within_what_the_hub_accepts():
    """Code excerpts full of control characters are six times longer once escaped: batches
    are bounded in bytes too, so none is refused by the hub (and dropped) for its size."""
    from hdshub import audit_api

    bodies = []

    class Hub:
        def post(self, body):
            bodies.append(body)
            return 201, b""

    client = audit.AuditClient("http://127.0.0.1:9/hub/api", "t")
    client.hub = Hub()
    for _ in range(300):
        client.record("alice", "execute", "kernel", **audit.code_event("\x01" * 10_000))
    run(client.flush())
    assert len(bodies) > 1 and not client.queue
    assert all(len(body) <= audit_api.MAX_BODY_BYTES for body in bodies)
    assert sum(len(json.loads(body)["events"]) for body in bodies) == 300


def test_a_batch_the_hub_refuses_is_dropped_and_the_trail_says_how_many():
    """A batch the hub will never accept (400) would block every later event: it is dropped,
    and the next delivery carries an audit-overflow event counting what was lost."""
    sent = []

    class Hub:
        def post(self, body):
            sent.append(json.loads(body)["events"])
            return (400 if len(sent) == 1 else 201), b"refused"

    client = audit.AuditClient("http://127.0.0.1:9/hub/api", "t")
    client.hub = Hub()
    for _ in range(3):
        client.record("alice", "contents-read", "work/a.csv")
    run(client.flush())
    assert not client.queue and client.dropped == 3
    client.record("alice", "contents-read", "work/b.csv")
    run(client.flush())
    overflow, later = sent[1]
    assert overflow["action"] == "audit-overflow" and overflow["details"] == {"dropped": 3}
    assert later["target"] == "work/b.csv" and client.dropped == 0


def test_a_batch_refused_for_now_is_kept_and_tried_again_ever_later(monkeypatch):
    """401, 403, 429 and hub errors: the same batch a second later would be refused again.
    It is kept, and the next posts come as for an unreachable hub, ever further apart, until
    the hub takes it (it used to be posted again every second, half a megabyte each time)."""
    answers = [403, 429, 503, 201]
    posts, delays = [], []

    class Hub:
        def post(self, body):
            posts.append(len(json.loads(body)["events"]))
            return answers[len(posts) - 1], b"refused"

    real_sleep = asyncio.sleep

    async def sleep(delay):  # the client's waits, recorded and not waited
        delays.append(delay)
        await real_sleep(0)

    client = audit.AuditClient("http://127.0.0.1:9/hub/api", "t")
    client.hub = Hub()
    for _ in range(3):
        client.record("alice", "contents-read", "work/a.csv")

    async def deliver():
        monkeypatch.setattr(audit.asyncio, "sleep", sleep)
        client.start()
        while len(posts) < len(answers) or len(delays) <= len(answers):
            await real_sleep(0.005)
        client._task.cancel()

    run(deliver())
    assert delays[:5] == [1.0, 2.0, 4.0, 8.0, 1.0]  # back to every second once delivered
    assert posts == [3, 3, 3, 3] and not client.queue and client.dropped == 0


def test_deliveries_keep_one_connection_and_survive_a_hub_restart():
    """Every post used to open a connection (and a TLS handshake, on the server and on the
    hub) once a second. Against tornado's HTTP server, which the hub runs: three flushes
    share one connection; after the hub restarts on the same port, the next flush opens a
    new one and every event arrives exactly once."""
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets
    from tornado.web import Application, RequestHandler

    received, peers = [], []

    class Events(RequestHandler):
        def post(self):
            assert self.request.headers["Authorization"] == "token t"
            received.extend(e["target"] for e in json.loads(self.request.body)["events"])
            peers.append(self.request.connection.stream.socket.getpeername())
            self.set_status(201)

    def start_hub(port=0):
        sockets = bind_sockets(port, "127.0.0.1")
        server = HTTPServer(Application([(r"/hub/api/hdshub/audit/events", Events)]))
        server.add_sockets(sockets)
        return server, sockets[0].getsockname()[1]

    async def scenario():
        hub, port = start_hub()
        client = audit.AuditClient(f"http://127.0.0.1:{port}/hub/api", "t")
        for name in ("a", "b", "c"):
            client.record("alice", "contents-read", name)
            await client.flush()
        assert received == ["a", "b", "c"] and len(set(peers)) == 1 and client.hub.opened == 1
        hub.stop()
        await hub.close_all_connections()
        hub, _ = start_hub(port)
        client.record("alice", "contents-read", "d")
        await client.flush()
        assert received == ["a", "b", "c", "d"] and client.hub.opened == 2 and not client.queue
        hub.stop()
        await hub.close_all_connections()
        client.record("alice", "contents-read", "e")  # the hub is down: kept for later
        with pytest.raises(OSError):
            await client.flush()
        assert [e["target"] for e in client.queue] == ["e"] and received[-1] == "d"

    run(scenario())
