"""Turn Settings into JupyterHub configuration.

Pure setters in the manner of the-littlest-jupyterhub: each one only sets traitlets on `c`
from settings; none appends to or mutates what another set. jupyterhub_config.py calls
`apply(c, settings)` and nothing else.
"""

from __future__ import annotations

import sys

from traitlets.config import Config

from . import audit_hub, culling, dashboard_hub, home, naming, oidc, report_hub, tiers, tls, usage, usage_page
from .audit_api import ROUTE as AUDIT_ROUTE, AuditEventsHandler
from .egress import load_egress
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
    "read:roles",
]

# Hub operators (the local administrator, or the identity provider's admin groups): manage
# users, groups and servers, never enter a server (no access:servers) nor read users'
# identity-provider tokens (no admin:auth_state, which admin:users would bring).
OPERATOR_ROLE = "hdshub-operator"
OPERATOR_SCOPES = [
    "admin-ui", "users", "list:users", "read:users", "groups", "list:groups", "read:groups",
    "admin:servers", "read:hub", "read:roles",
]

# A login lasts a working day; the single-user servers' OAuth tokens follow it
# (JupyterHub's oauth_token_expires_in defaults to the cookie's age).
COOKIE_MAX_AGE_DAYS = 0.5
# API tokens a user makes (scripts, the reports CLI) live one day at most; none lives forever.
TOKEN_MAX_SECONDS = 24 * 3600
# How long a single-user server trusts a token it checked with the hub: a revoked token stops
# working there within this delay (JupyterHub's default is 300 s).
SERVER_TOKEN_CACHE_SECONDS = 10
CSP_REPORT_URI = "/hub/security/csp-report"
# Hub pages: never framed (clickjacking), no <base> or plugin tricks, forms post to the hub.
HUB_CSP = "; ".join([
    "frame-ancestors 'none'", "base-uri 'self'", "object-src 'none'", "form-action 'self'",
    f"report-uri {CSP_REPORT_URI}",
])
# Single-user servers: never framed. jupyter-server appends "sandbox allow-scripts" to this on
# user-served files (/files, /nbconvert), so their scripts run in an origin of their own.
SERVER_CSP = f"frame-ancestors 'none'; report-uri {CSP_REPORT_URI}"


def apply(c: Config, settings: Settings) -> None:
    update_hub(c, settings)
    update_proxy(c, settings)
    update_tls(c, settings)
    update_sessions(c, settings)
    update_auth(c, settings)
    if settings.oidc is not None:
        oidc.update_auth(c, settings.oidc, settings.public_url)
    update_spawner(c, settings)
    update_pages(c, settings)
    update_services(c, settings)
    update_audit(c, settings)
    update_handlers(c, settings)


def update_hub(c: Config, s: Settings) -> None:
    c.JupyterHub.db_url = s.state.db_url
    c.JupyterHub.cookie_secret_file = str(s.state.cookie_secret_file)
    c.JupyterHub.bind_url = s.public_url
    # The hub API listens on a host address reachable from project networks only through
    # the firewall's single opening (see firewall.py), never on all interfaces.
    c.JupyterHub.hub_bind_url = f"https://{s.hub_ip}:{s.hub_port}"
    c.JupyterHub.hub_connect_url = f"https://{s.hub_ip}:{s.hub_port}"
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = 0
    c.JupyterHub.default_url = "/hub/home"
    c.JupyterHub.redirect_to_server = False
    # Servers outlive a hub restart; their work lives in project volumes anyway.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.pid_file = str(s.state.path / "jupyterhub.pid")


def update_proxy(c: Config, s: Settings) -> None:
    # Debian's configurable-http-proxy needs Debian's Node.js modules on NODE_PATH; the
    # proxy's TLS floor and cipher suites are pinned here, whatever NODE_OPTIONS says.
    c.ConfigurableHTTPProxy.command = [
        "env", "NODE_PATH=/usr/share/nodejs", f"NODE_OPTIONS={tls.NODE_TLS_OPTIONS}",
        "configurable-http-proxy", "--ssl-ciphers", tls.CIPHERS,
    ]
    c.ConfigurableHTTPProxy.api_url = f"https://127.0.0.1:{s.proxy_api_port}"
    c.ConfigurableHTTPProxy.auth_token = s.state.secret("proxy-auth-token")
    c.ConfigurableHTTPProxy.pid_file = str(s.state.path / "proxy.pid")


def update_tls(c: Config, s: Settings) -> None:
    if s.tls_cert is not None:
        c.JupyterHub.ssl_cert = str(s.tls_cert)
        c.JupyterHub.ssl_key = str(s.tls_key)
    # Inside the host too, every connection between hub, proxy and servers is TLS with
    # certificates checked both ways (internal_tls.py): a container on a project network
    # can neither read that traffic nor pose as the hub or as another server.
    c.JupyterHub.internal_ssl = True
    c.JupyterHub.internal_certs_location = str(s.state.internal_certs_dir)
    c.JupyterHub.trusted_alt_names = [f"IP:{s.hub_ip}"]


def update_sessions(c: Config, s: Settings) -> None:
    """Cookies, tokens and the headers of hub pages."""
    c.JupyterHub.cookie_host_prefix_enabled = True
    c.JupyterHub.cookie_max_age_days = COOKIE_MAX_AGE_DAYS
    c.JupyterHub.token_expires_in_max_seconds = TOKEN_MAX_SECONDS
    c.JupyterHub.tornado_settings = {
        "headers": {
            "Content-Security-Policy": HUB_CSP,
            "Strict-Transport-Security": tls.HSTS,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
        # Every hub cookie (the _xsrf one too) is https-only and leaves the browser with the
        # login it belongs to.
        "cookie_options": {"secure": True, "expires_days": COOKIE_MAX_AGE_DAYS},
        # JupyterHub's request log, which also writes refused logins and logouts to the audit
        # trail: no authenticator hook sees those (update_audit sets the rest of the trail).
        "log_function": audit_hub.request_logger(
            str(s.state.audit_dir), audit_hub.trusted_proxies(s.hub_ip)),
        # A member opening a project's dashboard is not asked to "authorize" the dashboard
        # server (the hub's own, opened through its viewers' role): dashboard_hub.py.
        "oauth_no_confirm_list": dashboard_hub.NoConfirmClients(),
    }


def update_auth(c: Config, s: Settings) -> None:
    c.JupyterHub.authenticator_class = "hdshub.auth.LocalAccountsAuthenticator"
    # Accounts are created by administrators only (`hdshub user add`): no self sign-up, so
    # holding a valid local account is the authorization.
    c.LocalAccountsAuthenticator.enable_signup = False
    c.LocalAccountsAuthenticator.minimum_password_length = 12
    c.LocalAccountsAuthenticator.check_common_password = True
    c.LocalAccountsAuthenticator.allowed_failed_logins = 5
    c.Authenticator.allow_all = True
    # Nobody holds JupyterHub's admin role: it carries access to every user's server. Hub
    # operators get OPERATOR_SCOPES instead (update_services).
    c.Authenticator.admin_users = set()
    c.Authenticator.username_pattern = naming.USERNAME_PATTERN


def update_spawner(c: Config, s: Settings) -> None:
    c.JupyterHub.spawner_class = "hdshub.spawner.ProjectSpawner"
    c.ProjectSpawner.tiers = {name: tiers.enforced(tier) for name, tier in s.tiers.items()}
    c.ProjectSpawner.kit_images = {name: kit.image_tag for name, kit in s.kits.items()}
    c.ProjectSpawner.egress = s.egress if s.egress is not None else load_egress()
    c.ProjectSpawner.policies_dir = str(s.state.policies_dir)
    c.ProjectSpawner.use_internal_ip = True
    # Servers are reached at the address their certificate names (ProjectSpawner.prepare):
    # the hub's host cannot resolve container names.
    c.ProjectSpawner.use_internal_hostname = False
    c.ProjectSpawner.certs_dir = str(s.state.server_certs_dir)
    c.ProjectSpawner.remove = True
    c.ProjectSpawner.pull_policy = "never"
    c.ProjectSpawner.cmd = ["jupyterhub-singleuser"]
    c.ProjectSpawner.notebook_dir = "/home/jovyan"
    c.ProjectSpawner.default_url = "/lab"
    c.ProjectSpawner.disable_user_config = True
    c.ProjectSpawner.start_timeout = 120
    c.ProjectSpawner.http_timeout = 60
    # ?token= in a URL never authenticates a page of a server (websockets excepted, as in
    # JupyterHub: browsers cannot send them a header).
    c.ProjectSpawner.environment = {"JUPYTERHUB_ALLOW_TOKEN_IN_URL": "0"}
    server_settings = {
        "headers": {
            "Content-Security-Policy": SERVER_CSP,
            "Strict-Transport-Security": tls.HSTS,
        },
        "nbconvert_csp_sandbox": True,
    }
    c.ProjectSpawner.args = [
        # A Python literal: traitlets reads a dict given on the command line this way only.
        f"--ServerApp.tornado_settings={server_settings!r}",
        f"--HubOAuth.cache_max_age={SERVER_TOKEN_CACHE_SECONDS}",
    ]


def update_pages(c: Config, s: Settings) -> None:
    c.JupyterHub.template_paths = [str(s.templates_dir)]
    c.JupyterHub.template_vars = {
        "hdshub_projects": home.projects_for(s),
    }


def update_services(c: Config, s: Settings) -> None:
    culler, culler_role = culling.service(
        [tier.quotas.idle_timeout_seconds for tier in s.tiers.values()],
        s.state.secret("idle-culler-api-token"), s.state.internal_certs_dir)
    c.JupyterHub.services = [
        {"name": CLI_SERVICE, "api_token": s.state.secret("cli-api-token"), "display": False},
        culler,
        usage_service(s),
    ]
    operators = ({"groups": list(s.oidc.groups.admin)} if s.oidc is not None and s.oidc.groups
                 else {"users": [] if s.oidc is not None else [s.admin_user]})
    c.JupyterHub.load_roles = [
        {"name": CLI_SERVICE, "scopes": CLI_SCOPES, "services": [CLI_SERVICE]},
        culler_role,
        {"name": OPERATOR_ROLE, "description": "Hub operators: no access to users' servers",
         "scopes": OPERATOR_SCOPES, **operators},
    ]


def usage_service(s: Settings) -> dict:
    """The usage meter (usage.py): a hub-managed process, so it runs exactly while the hub
    does; it needs no hub API token, only the Docker engine and the state directory."""
    return {"name": usage.SERVICE, "display": False,
            "command": [sys.executable, "-m", "hdshub.usage", "--state-dir", str(s.state.path),
                        "--every", str(s.usage_every_seconds),
                        "--storage-every", str(s.usage_every_seconds * 10)]}


def update_audit(c: Config, s: Settings) -> None:
    """The hub's own audit events: accepted logins, project servers started and stopped.
    (Refused logins and logouts: update_sessions' log_function; the endpoint project servers
    send their events to: update_handlers.)"""
    directory = str(s.state.audit_dir)
    trusted = audit_hub.trusted_proxies(s.hub_ip)
    c.Authenticator.post_auth_hook = audit_hub.login_hook(directory, trusted)
    c.Spawner.pre_spawn_hook, c.Spawner.post_stop_hook = audit_hub.server_hooks(directory, trusted)


def update_handlers(c: Config, s: Settings) -> None:
    """The hub's own endpoints and pages: the audit trail's (audit_api.py), the
    dashboards' (dashboard_hub.py), the reports' (report_hub.py) and the usage page. JupyterHub has one list for all, so one setter sets it.

    JupyterHub 6 calls extra_handlers deprecated in favour of services; a service would have
    to be given every server's address and token to attribute audit events, and could not
    start dashboard servers or grant access to them, which the hub process does itself.
    """
    egress = s.egress if s.egress is not None else load_egress()
    trusted = audit_hub.trusted_proxies(s.hub_ip)
    c.JupyterHub.extra_handlers = [
        (AUDIT_ROUTE, AuditEventsHandler, {"audit_dir": str(s.state.audit_dir)}),
        *dashboard_hub.handlers(egress["notebooks"]["max_bytes"], str(s.state.audit_dir), trusted),
        *report_hub.handlers({
            "tiers": {name: tiers.enforced(tier) for name, tier in s.tiers.items()},
            "kit_images": {name: kit.image_tag for name, kit in s.kits.items()},
            "audit_dir": str(s.state.audit_dir), "trusted": trusted,
            "max_notebook_bytes": egress["notebooks"]["max_bytes"],
            "min_count": egress["disclosure"]["min_count"]}),
        (usage_page.ROUTE, usage_page.UsagePageHandler,
         {"usage_db": str(s.state.usage_db), "audit_dir": str(s.state.audit_dir), "tiers": s.tiers}),
    ]
