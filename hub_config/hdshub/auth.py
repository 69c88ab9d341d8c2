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


class LocalAccountsAuthenticator(NativeAuthenticator):
    def get_handlers(self, app):
        return [
            (r"/change-password", ChangePasswordHandler),
            (r"/change-password/([^/]+)", ChangePasswordAdminHandler),
        ]
