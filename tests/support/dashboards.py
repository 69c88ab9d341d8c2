"""A project with a published dashboard, made the way people make one: data imported by the
CLI, the demo notebook left in the work area, `hdshub dashboard publish`."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hdshub import demo
from tests.integration.conftest import new_slug

DASHBOARD = demo.DEMO_DASHBOARD.stem


@dataclass
class DashboardProject:
    slug: str
    passwords: dict[str, str] = field(default_factory=dict)
    published: str = ""

    @property
    def door(self) -> str:
        return f"/hub/dashboards/{self.slug}/{DASHBOARD}"

    def server(self, path: str = "") -> str:
        return f"/user/dashboards/{self.slug}/{path}"

    @property
    def render(self) -> str:
        return self.server(f"voila/render/{DASHBOARD}.ipynb")


def dashboard_project(hub, docker_client, members: dict[str, str], publish: bool = True) -> DashboardProject:
    """A fresh project with the synthetic cohort, `members` {user: role}, and the demo
    dashboard published from work/ (unless publish=False)."""
    project = DashboardProject(new_slug())
    hub.cli("project", "create", project.slug, "--tier", "public", "--kit", "python-stats",
            "--title", f"Dashboards {project.slug}")
    for user, role in members.items():
        project.passwords[user] = hub.add_user(user)
        hub.cli("project", "add-member", project.slug, user, "--role", role)
    with tempfile.TemporaryDirectory() as tmp:
        hub.cli("data", "import", project.slug, str(demo.write_cohort(Path(tmp) / demo.DEMO_FILE)))
    notebook = demo.copy_to_work(docker_client, project.slug, demo.DEMO_DASHBOARD)
    if publish:
        project.published = hub.cli("dashboard", "publish", project.slug, notebook).stdout
    return project
