"""Usage totals and the monthly report: the arithmetic an invoice rests on."""

from __future__ import annotations

import csv
import io
import os
import stat
from datetime import datetime, timezone

import pytest

from hdshub import settings
from hdshub.audit_log import AuditTrail
from hdshub.tiers import load_tiers
from hdshub.usage import ContainerSample, UsageStore
from hdshub.usage_report import MonthError, monthly, parse_month, to_csv, to_html, write

T0 = datetime(2026, 3, 31, 23, 0, tzinfo=timezone.utc).timestamp()  # one hour before April
GB = 1024**3


def sample(cpu_s: float, memory: int = 100 * 1024**2, container: str = "c1", purpose: str = "notebook-server",
           user: str = "alice", project: str = "p1") -> ContainerSample:
    return ContainerSample(container, project, user, purpose, int(cpu_s * 1e9), memory)


@pytest.fixture
def store(tmp_path):
    return UsageStore(tmp_path / "usage.sqlite", every_seconds=60)


def test_store_is_private(tmp_path):
    UsageStore(tmp_path / "usage.sqlite")
    assert stat.S_IMODE(os.stat(tmp_path / "usage.sqlite").st_mode) == 0o600


def test_time_and_cpu_add_up_from_cumulative_counters(store):
    for minute, cpu in enumerate([5, 20, 50, 50]):
        store.add_containers([sample(cpu, memory=(minute + 1) * GB)], T0 + 60 * minute)
    [row] = store.containers("2026-03")
    assert row["seconds"] == 180 and row["cpu_seconds"] == pytest.approx(45)
    assert row["peak_memory_bytes"] == 4 * GB


def test_a_month_boundary_splits_the_totals(store):
    store.add_containers([sample(0)], T0 + 3540)   # 23:59 on March 31st
    store.add_containers([sample(30)], T0 + 3600 + 60)  # 00:01 on April 1st
    assert store.containers("2026-03")[0]["seconds"] == 0
    april = store.containers("2026-04")[0]
    assert april["seconds"] == 120 and april["cpu_seconds"] == pytest.approx(30)


def test_a_gap_longer_than_three_periods_counts_nothing(store):
    store.add_containers([sample(0)], T0)
    store.add_containers([sample(100)], T0 + 3600)  # the service was stopped for an hour
    [row] = store.containers("2026-03")
    assert row["seconds"] == 0 and row["cpu_seconds"] == 0


def test_a_restarted_container_is_counted_as_a_new_one(store):
    store.add_containers([sample(0, container="a"), sample(0, container="b")], T0)
    store.add_containers([sample(10, container="a"), sample(3, container="b")], T0 + 60)
    rows = {r["container"]: r for r in store.containers("2026-03")}
    assert rows["a"]["cpu_seconds"] == pytest.approx(10) and rows["b"]["cpu_seconds"] == pytest.approx(3)


def test_storage_is_integrated_over_time(store):
    store.add_storage({"p1": 2 * GB}, T0)
    store.add_storage({"p1": 4 * GB}, T0 + 1800)
    store.add_storage({"p1": 4 * GB}, T0 + 3599)
    assert store.storage("2026-03")["p1"]["byte_seconds"] == pytest.approx(2 * GB * 1800 + 4 * GB * 1799)


def test_report_counts_servers_views_runs_and_members(store, tmp_path):
    store.add_containers([sample(0), sample(0, container="d", purpose="dashboard-server", user="dashboards")], T0)
    store.add_containers([sample(90), sample(12, container="d", purpose="dashboard-server", user="dashboards")],
                         T0 + 120)
    trail = AuditTrail(tmp_path / "audit")
    for user, action, outcome in [("carol", "dashboard-view", "ok"), ("carol", "dashboard-view", "ok"),
                                  ("dan", "dashboard-view", "refused"), ("sam", "report-run", "ok")]:
        trail.append("p1", {"time": "2026-03-31T23:30:00Z", "user": user, "action": action,
                            "target": "x", "outcome": outcome})
    tiers = load_tiers()
    [row] = monthly(store, trail, {"p1": "public"}, tiers, "2026-03")
    assert row.server_hours == pytest.approx(120 / 3600, abs=1e-3)  # the dashboard server is not a notebook
    assert row.cpu_seconds == pytest.approx(102)
    assert (row.dashboard_views, row.report_runs) == (2, 1)
    assert row.active_members == 3  # alice ran a server, carol viewed, sam ran a report
    assert row.price_eur_ht == tiers["public"].price_eur_ht_per_month
    assert row.storage_quota_gb == pytest.approx(tiers["public"].quotas.storage_bytes / GB, abs=1e-3)


def test_csv_and_html_hold_every_project_and_its_price(store, tmp_path):
    store.add_containers([sample(0, project="alpha")], T0)
    store.add_containers([sample(60, project="alpha")], T0 + 60)
    rows = monthly(store, AuditTrail(tmp_path / "audit"), {"alpha": "public", "beta": "custom"},
                   load_tiers(), "2026-03")
    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [r["project"] for r in table] == ["alpha", "beta"]
    assert table[1]["price_eur_ht"] == "on quote" and float(table[0]["cpu_seconds"]) == 60
    page = to_html(rows, "2026-03")
    assert page.count("<svg") == 2 and "<script" not in page and "sur devis / on quote" in page
    csv_path, html_path = write(rows, "2026-03", tmp_path / "out")
    assert csv_path.read_text() == to_csv(rows) and html_path.read_text() == page


@pytest.mark.parametrize("text", ["2026-13", "2026-3", "26-03", "march", ""])
def test_bad_months_are_refused_with_the_expected_form(text):
    with pytest.raises(MonthError, match="expected YYYY-MM"):
        parse_month(text)


def test_sampling_period_is_checked(monkeypatch):
    monkeypatch.setenv("HDSHUB_USAGE_EVERY", "0.1")
    with pytest.raises(ValueError, match="HDSHUB_USAGE_EVERY='0.1'.*between 1 and 3600"):
        settings.usage_every_from_env()
    monkeypatch.setenv("HDSHUB_USAGE_EVERY", "2")
    assert settings.usage_every_from_env() == 2
