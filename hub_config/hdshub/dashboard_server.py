"""What a project's dashboard server is, besides what every project container is.

The server `dashboards/<project>` runs the project's kit image with the same hardening and
tier limits as a notebook server (ProjectSpawner.configure_for), then differs as follows:

- the guard runs in "dashboard" mode: Voilà's pages, the kernels they talk to (widget
  messages only) and JupyterHub's login routes; /lab, /tree, /api/contents, /terminals,
  /files and the rest are refused to everyone;
- Voilà's server extension serves `live/` of the dashboards volume, sources stripped, with
  hdshub's template, errors hidden; hdshub_voila keeps preheated kernels for each dashboard;
- mounts, all read-only: the project's raw data, the published dashboards, the guard and
  kit helpers, the policy, the Voilà template. No work or outputs area: nothing a dashboard
  computes is saved.
"""

from __future__ import annotations

import math
from pathlib import Path

from jupyterhub import orm, roles

from . import containers, dashboards
from .projects import ROLES

PURPOSE = "dashboard-server"
#: Where the Voilà template (templates/voila/hdshub) is found: $JUPYTER_PATH/voila/templates.
JUPYTER_PATH = "/opt/hdshub/share"
TEMPLATES_MOUNT = f"{JUPYTER_PATH}/voila/templates"
VOILA_TEMPLATES = containers.REPO_ROOT / "templates" / "voila"
DEFAULT_URL = "/voila/tree"
#: Extensions of the dashboard server. The command line replaces the image's dictionary
#: (images/base/jupyter_server_config.json) as a whole, so every entry is spelled out: the
#: guard stays required, and what a dashboard server does not need is off.
SERVER_EXTENSIONS = {
    "hdshub_guard": True,
    "hdshub_voila": True,
    "voila.server_extension": True,
    "jupyterlab": False,
    "jupyter_lsp": False,
    "jupyter_server_terminals": False,
    "notebook_shim": False,
}


def server_args(pool_size: int, cpus: float = 1) -> list[str]:
    """Command-line settings of the dashboard server, after the ones all servers get; the
    notebooks it runs at once follow the tier's CPUs (hdshub_voila)."""
    return [
        f"--ServerApp.jpserver_extensions={SERVER_EXTENSIONS!r}",
        "--ServerApp.terminals_enabled=False",
        "--VoilaConfiguration.template=hdshub",
        "--VoilaConfiguration.strip_sources=True",
        "--VoilaConfiguration.show_tracebacks=False",
        "--VoilaConfiguration.allow_template_override=NO",
        "--VoilaConfiguration.allow_theme_override=NO",
        # Voilà's /voila/files serves nothing: dashboards show what their kernels compute.
        "--VoilaConfiguration.file_allowlist=[]",
        f"--PooledKernelManager.pool_size={int(pool_size)}",
        f"--PooledKernelManager.concurrent_preparations={max(1, math.ceil(cpus))}",
    ]


def mounts(volumes: dict[str, str], policy_folder: Path, templates: Path = VOILA_TEMPLATES) -> dict[str, str]:
    """{source: path}, all read-only."""
    return {
        volumes["data"]: f"{containers.HOME}/data",
        volumes["dashboards"]: dashboards.MOUNT,
        str(containers.GUARD_SOURCE): containers.GUARD_MOUNT,
        str(policy_folder): containers.CONTAINER_POLICY_DIR,
        str(templates): TEMPLATES_MOUNT,
    }


def environment() -> dict[str, str]:
    return {"JUPYTER_PATH": JUPYTER_PATH}


def policy_folder(policies_dir: str, slug: str) -> Path:
    """The dashboard server's own policy folder ('.' never occurs in a project slug)."""
    return Path(policies_dir) / f"{slug}.dashboard"


def viewer_role(slug: str) -> str:
    return f"dashboard-viewers-{slug}"


def grant_viewers(db, slug: str) -> None:
    """Every member of the project, whatever their role, may open its dashboard server, and
    nothing more: the role `dashboard-viewers-<slug>`, holding only
    `access:servers!server=dashboards/<slug>`, assigned to the project's role groups.

    A role on groups, so that leaving the project (its groups) ends the access at once. Not
    a JupyterHub share: JupyterHub 6.1.1 leaves shares granted to groups out of the
    permissions of OAuth tokens, so a group share never opens a server. JupyterHub deletes
    roles its configuration does not list at each start; this is called again whenever the
    server starts, is polled (at hub start too) or a dashboard is opened.
    """
    scope = f"access:servers!server={dashboards.OWNER}/{slug}"
    name = viewer_role(slug)
    role = orm.Role.find(db, name)
    if role is None or list(role.scopes) != [scope]:
        role = roles.create_role(db, {
            "name": name, "scopes": [scope],
            "description": f"Members of project {slug} open its dashboards",
        })
    groups = [g for g in (orm.Group.find(db, f"{slug}:{r}") for r in ROLES) if g is not None]
    if {g.id for g in role.groups} != {g.id for g in groups}:
        role.groups = groups
        db.commit()
