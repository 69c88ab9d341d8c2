"""Local accounts for the embedded default: NativeAuthenticator's password store, JupyterHub's
own login page.

nativeauthenticator 1.3.0 ships a login handler written for JupyterHub < 6 (it calls the
removed `statsd`), so its login and sign-up pages are not registered: JupyterHub's standard
login handler calls `authenticate()`, which checks the bcrypt hash (and the TOTP code of
users who enabled it). Only the change-password pages are kept. Accounts are created by
administrators (`hdshub user add`); production logs in through OIDC instead.
"""

from __future__ import annotations

from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.handlers import ChangePasswordAdminHandler, ChangePasswordHandler

from .naming import DASHBOARD_OWNER


class NoSystemUserLogin:
    """Nobody logs in, whatever the authenticator, as the system user owning the projects'
    dashboard servers (not Authenticator.blocked_users: JupyterHub strips a blocked user's
    roles and stops its servers at every start). Names starting with its name and '-' are
    refused too: JupyterHub names a server's OAuth client `jupyterhub-user-<user>-<server>`,
    and the dashboard servers' clients must not be mistaken for anyone else's."""

    def validate_username(self, username):
        if username.startswith(f"{DASHBOARD_OWNER}-"):
            return False
        return super().validate_username(username)

    def check_blocked_users(self, username, authentication=None):
        if username == DASHBOARD_OWNER:
            return False
        return super().check_blocked_users(username, authentication)


class LocalAccountsAuthenticator(NoSystemUserLogin, NativeAuthenticator):
    def get_handlers(self, app):
        return [
            (r"/change-password", ChangePasswordHandler),
            (r"/change-password/([^/]+)", ChangePasswordAdminHandler),
        ]
