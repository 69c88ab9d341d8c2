"""Turn Settings into JupyterHub configuration.

Pure setters in the manner of the-littlest-jupyterhub: each one only sets traitlets on `c`
from settings; none appends to or mutates what another set. jupyterhub_config.py calls
`apply(c, settings)` and nothing else.
"""

from __future__ import annotations

from traitlets.config import Config

from . import home, naming, oidc
from .settings import CLI_SERVICE, Settings

# The CLI manages users, projects and servers; it never gets access to users' servers.
CLI_SCOPES = [
    "admin:users",
    "admin:groups",
    "admin:servers",
    "tokens",
    "list:users",
    "list:groups",
    "read:hub",
]


def apply(c: Config, settings: Settings) -> None:
    update_hub(c, settings)
    update_proxy(c, settings)
    update_auth(c, settings)
    if settings.oidc is not None:
        oidc.update_auth(c, settings.oidc, settings.public_url)
    update_spawner(c, settings)
    update_pages(c, settings)
    update_services(c, settings)


def update_hub(c: Config, s: Settings) -> None:
    c.JupyterHub.db_url = s.state.db_url
    c.JupyterHub.cookie_secret_file = str(s.state.cookie_secret_file)
    c.JupyterHub.bind_url = s.public_url
    # The hub API listens on a host address reachable from project networks only through
    # the firewall's single opening (see firewall.py), never on all interfaces.
    c.JupyterHub.hub_bind_url = f"http://{s.hub_ip}:{s.hub_port}"
    c.JupyterHub.hub_connect_url = f"http://{s.hub_ip}:{s.hub_port}"
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = 0
    c.JupyterHub.default_url = "/hub/home"
    c.JupyterHub.redirect_to_server = False
    # Servers outlive a hub restart; their work lives in project volumes anyway.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.pid_file = str(s.state.path / "jupyterhub.pid")


def update_proxy(c: Config, s: Settings) -> None:
    # Debian's configurable-http-proxy needs Debian's Node.js modules on NODE_PATH.
    c.ConfigurableHTTPProxy.command = [
        "env", "NODE_PATH=/usr/share/nodejs", "configurable-http-proxy",
    ]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s.proxy_api_port}"
    c.ConfigurableHTTPProxy.auth_token = s.state.secret("proxy-auth-token")
    c.ConfigurableHTTPProxy.pid_file = str(s.state.path / "proxy.pid")


def update_auth(c: Config, s: Settings) -> None:
    c.JupyterHub.authenticator_class = "hdshub.auth.LocalAccountsAuthenticator"
    # Accounts are created by administrators only (`hdshub user add`): no self sign-up, so
    # holding a valid local account is the authorization.
    c.LocalAccountsAuthenticator.enable_signup = False
    c.LocalAccountsAuthenticator.minimum_password_length = 12
    c.LocalAccountsAuthenticator.check_common_password = True
    c.LocalAccountsAuthenticator.allowed_failed_logins = 5
    c.Authenticator.allow_all = True
    c.Authenticator.admin_users = {s.admin_user}
    c.Authenticator.username_pattern = naming.USERNAME_PATTERN


def update_spawner(c: Config, s: Settings) -> None:
    c.JupyterHub.spawner_class = "hdshub.spawner.ProjectSpawner"
    c.ProjectSpawner.tiers = {
        name: {
            "cpu": tier.limits.cpu,
            "memory_bytes": tier.limits.memory_bytes,
            "pids": tier.limits.pids,
        }
        for name, tier in s.tiers.items()
    }
    c.ProjectSpawner.kit_images = {name: kit.image_tag for name, kit in s.kits.items()}
    c.ProjectSpawner.use_internal_ip = True
    c.ProjectSpawner.remove = True
    c.ProjectSpawner.pull_policy = "never"
    c.ProjectSpawner.cmd = ["jupyterhub-singleuser"]
    c.ProjectSpawner.notebook_dir = "/home/jovyan"
    c.ProjectSpawner.default_url = "/lab"
    c.ProjectSpawner.disable_user_config = True
    c.ProjectSpawner.start_timeout = 120
    c.ProjectSpawner.http_timeout = 60


def update_pages(c: Config, s: Settings) -> None:
    c.JupyterHub.template_paths = [str(s.templates_dir)]
    c.JupyterHub.template_vars = {
        "hdshub_projects": home.projects_for(s),
    }


def update_services(c: Config, s: Settings) -> None:
    c.JupyterHub.services = [
        {"name": CLI_SERVICE, "api_token": s.state.secret("cli-api-token"), "display": False}
    ]
    c.JupyterHub.load_roles = [
        {"name": CLI_SERVICE, "scopes": CLI_SCOPES, "services": [CLI_SERVICE]}
    ]
