# A small JupyterHub for the OIDC login tests: hdshub's OIDC login exactly as the hub sets it
# (hdshub.oidc.update_auth over $HDSHUB_CONFIG_DIR/auth.yaml), and only what a hub needs
# around it to run on 127.0.0.1 ports. No Docker: logging in spawns nothing.
import os
from pathlib import Path

from hdshub import oidc
from hdshub.naming import USERNAME_PATTERN

c = get_config()  # noqa: F821 (provided by JupyterHub)
env = os.environ
state = Path(env["HDSHUB_TEST_STATE"])
public_url = env["HDSHUB_TEST_PUBLIC_URL"]

oidc.update_auth(c, oidc.load_oidc_settings(Path(env["HDSHUB_CONFIG_DIR"])), public_url)
c.Authenticator.username_pattern = USERNAME_PATTERN
# Short enough for a test to see a refresh happen.
c.HdsOIDCAuthenticator.auth_refresh_age = int(env["HDSHUB_TEST_REFRESH_AGE"])

c.JupyterHub.bind_url = public_url
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{env['HDSHUB_TEST_HUB_PORT']}"
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
c.JupyterHub.spawner_class = "simple"
# As hdshub's hub: after login, the home page, never an automatic spawn.
c.JupyterHub.default_url = "/hub/home"
c.JupyterHub.redirect_to_server = False
c.ConfigurableHTTPProxy.command = ["env", "NODE_PATH=/usr/share/nodejs", "configurable-http-proxy"]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env['HDSHUB_TEST_PROXY_API_PORT']}"
c.ConfigurableHTTPProxy.auth_token = env["HDSHUB_TEST_PROXY_TOKEN"]
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
# The test reads users and groups through the REST API with this service's token.
c.JupyterHub.services = [{"name": "oidc-tests", "api_token": env["HDSHUB_TEST_SERVICE_TOKEN"]}]
c.JupyterHub.load_roles = [{"name": "oidc-tests", "services": ["oidc-tests"],
                            "scopes": ["list:users", "read:users", "read:groups", "admin:users"]}]
