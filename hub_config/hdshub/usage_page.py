"""/hub/usage: the month's usage per project, for the hub's operators (the same figures and
page as `hdshub usage report`). `?month=YYYY-MM` picks the month, `&format=csv` the CSV."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from jupyterhub import orm
from jupyterhub.handlers.base import BaseHandler
from tornado import web

from .audit_log import AuditTrail
from .projects import Project
from .spawner import refusal
from .usage import UsageStore
from .usage_report import MonthError, monthly, parse_month, to_csv, to_html

ROUTE = r"/usage"
#: Held by hdshub-operator (configurer.OPERATOR_SCOPES), by no project member.
REQUIRED_SCOPE = "admin-ui"


class UsagePageHandler(BaseHandler):
    def initialize(self, usage_db: str, audit_dir: str, tiers: dict):
        self.usage_db = Path(usage_db)
        self.audit_dir = Path(audit_dir)
        self.tiers = tiers

    @web.authenticated
    async def get(self):
        if REQUIRED_SCOPE not in self.expanded_scopes:
            raise refusal(403, "Page réservée aux opérateurs du hub.", "For the hub's operators only.")
        try:
            month = parse_month(self.get_argument("month", datetime.now(timezone.utc).strftime("%Y-%m")))
        except MonthError as error:
            raise refusal(400, f"Mois invalide : {error}", f"Invalid month: {error}") from None
        projects = {}
        for group in self.db.query(orm.Group):
            project = Project.from_group(group.name, group.properties)
            if project is not None:
                projects[project.slug] = project.tier
        rows = []
        if self.usage_db.exists():
            rows = monthly(UsageStore(self.usage_db), AuditTrail(self.audit_dir), projects, self.tiers, month)
        if self.get_argument("format", "html") == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="usage-{month}.csv"')
            self.finish(to_csv(rows))
            return
        self.finish(to_html(rows, month))
