"""A month of usage per project, against its tier: the input of an invoice.

Built from the usage service's totals (usage.py) and, for what people did rather than what
machines used (dashboard views, report runs), from the project's audit trail. Written by
`hdshub usage report --month YYYY-MM` as CSV and HTML, and shown on the hub's /hub/usage.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass
from datetime import date
from html import escape
from pathlib import Path

from .audit_log import AuditTrail
from .tiers import Tier
from .usage import UsageStore

MONTH_PATTERN = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
NOTEBOOK_PURPOSE = "notebook-server"
GB = 1024**3
DAY = 86400

CSV_COLUMNS = ("project", "tier", "price_eur_ht", "server_hours", "cpu_seconds", "peak_memory_gb",
               "memory_limit_gb", "storage_gb_days", "storage_quota_gb", "active_members",
               "dashboard_views", "report_runs")


class MonthError(ValueError):
    pass


def parse_month(text: str) -> str:
    match = MONTH_PATTERN.match(text or "")
    if not match:
        raise MonthError(f"month {text!r}: expected YYYY-MM, for example {date.today():%Y-%m}")
    return text


@dataclass(frozen=True)
class ProjectUsage:
    project: str
    tier: str
    price_eur_ht: float | None  # None: on quote
    server_hours: float
    cpu_seconds: float
    peak_memory_gb: float
    memory_limit_gb: float
    storage_gb_days: float
    storage_quota_gb: float
    active_members: int
    dashboard_views: int
    report_runs: int


def monthly(store: UsageStore, trail: AuditTrail, projects: dict[str, str], tiers: dict[str, Tier],
            month: str) -> list[ProjectUsage]:
    """One row per project (slug -> tier name) that exists or used anything this month."""
    containers = store.containers(month)
    storage = store.storage(month)
    rows = []
    for slug in sorted(set(projects) | {c["project"] for c in containers} | set(storage)):
        tier_name = projects.get(slug, "")
        tier = tiers.get(tier_name)
        mine = [c for c in containers if c["project"] == slug]
        servers = [c for c in mine if c["purpose"] == NOTEBOOK_PURPOSE]
        views, runs, people = _activity(trail, slug, month)
        rows.append(ProjectUsage(
            project=slug, tier=tier_name,
            price_eur_ht=tier.price_eur_ht_per_month if tier else None,
            server_hours=round(sum(c["seconds"] for c in servers) / 3600, 3),
            cpu_seconds=round(sum(c["cpu_seconds"] for c in mine), 1),
            peak_memory_gb=round(max((c["peak_memory_bytes"] for c in mine), default=0) / GB, 3),
            memory_limit_gb=round(tier.limits.memory_bytes / GB, 3) if tier else 0,
            storage_gb_days=round(storage.get(slug, {}).get("byte_seconds", 0) / GB / DAY, 6),
            storage_quota_gb=round(tier.quotas.storage_bytes / GB, 3) if tier else 0,
            active_members=len(people | {c["user"] for c in servers if c["user"]}),
            dashboard_views=views, report_runs=runs))
    return rows


def _activity(trail: AuditTrail, slug: str, month: str) -> tuple[int, int, set[str]]:
    views = runs = 0
    people: set[str] = set()
    for event in trail.events(slug):
        if not event.get("time", "").startswith(month) or event.get("outcome") != "ok":
            continue
        if event.get("action") == "dashboard-view":
            views += 1
        elif event.get("action") == "report-run":
            runs += 1
        else:
            continue
        if event.get("user"):
            people.add(event["user"])
    return views, runs, people


def to_csv(rows: list[ProjectUsage]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = asdict(row)
        values["price_eur_ht"] = "on quote" if row.price_eur_ht is None else row.price_eur_ht
        writer.writerow(values)
    return out.getvalue()


def _bar(label: str, value: float, limit: float, unit: str) -> str:
    """One horizontal bar: use against the tier's limit (no limit: the bar is the value)."""
    width = 320
    share = min(1.0, value / limit) if limit else (1.0 if value else 0.0)
    colour = "#b3261e" if limit and value > limit else "#1f6f8b"
    of = f" / {limit:g} {unit}" if limit else f" {unit}"
    return (f'<text x="0" y="14">{escape(label)}</text>'
            f'<rect x="170" y="3" width="{width}" height="14" fill="#e6eef2"/>'
            f'<rect x="170" y="3" width="{share * width:.1f}" height="14" fill="{colour}"/>'
            f'<text x="{180 + width}" y="14">{value:g}{escape(of)}</text>')


def chart(row: ProjectUsage, days_in_month: int) -> str:
    bars = [
        ("Pic mémoire / peak memory", row.peak_memory_gb, row.memory_limit_gb, "GB"),
        # The storage quota held all month long is the limit of its GB-days.
        ("Stockage / storage", row.storage_gb_days, row.storage_quota_gb * days_in_month, "GB-days"),
        ("Heures serveur / server hours", row.server_hours, 0, "h"),
        ("CPU", row.cpu_seconds, 0, "s"),
    ]
    lines = "".join(f'<g transform="translate(0,{i * 22})">{_bar(*bar)}</g>' for i, bar in enumerate(bars))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="640" height="{len(bars) * 22}" '
            f'font-family="sans-serif" font-size="12" aria-label="{escape(row.project)}">{lines}</svg>')


def to_html(rows: list[ProjectUsage], month: str) -> str:
    """A self-contained page (no script, no outside resource): French, then English."""
    year, number = (int(x) for x in month.split("-"))
    days = (date(year + number // 12, number % 12 + 1, 1) - date(year, number, 1)).days
    sections = []
    for row in rows:
        price = "sur devis / on quote" if row.price_eur_ht is None else f"{row.price_eur_ht:g} € HT"
        sections.append(
            f"<section><h2>{escape(row.project)} — {escape(row.tier or '?')} ({escape(price)})</h2>"
            f"{chart(row, days)}"
            f"<p>Membres actifs / active members : {row.active_members} · "
            f"vues de tableaux de bord / dashboard views : {row.dashboard_views} · "
            f"rapports / report runs : {row.report_runs}</p></section>")
    body = "".join(sections) or "<p>Aucun usage ce mois-ci. / No usage this month.</p>"
    return (f'<!doctype html><html lang="fr"><head><meta charset="utf-8">'
            f"<title>Usage {escape(month)}</title></head><body>"
            f"<h1>Usage des projets — {escape(month)} / Project usage</h1>{body}</body></html>")


def write(rows: list[ProjectUsage], month: str, folder: Path) -> tuple[Path, Path]:
    """usage-<month>.csv and .html in `folder`, each written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in (("csv", to_csv(rows)), ("html", to_html(rows, month))):
        path = folder / f"usage-{month}.{suffix}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        paths.append(path)
    return paths[0], paths[1]
