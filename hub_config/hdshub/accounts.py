"""Local accounts of the embedded default (NativeAuthenticator), created by administrators.

Self sign-up is off. `hdshub user add` creates the hub user through the REST API (which
validates the name), then stores a bcrypt hash of a generated password in
NativeAuthenticator's own table, the same record its sign-up page would write. The
password is shown once and kept nowhere in clear.
"""

from __future__ import annotations

import secrets

import bcrypt
from jupyterhub import orm
from nativeauthenticator.orm import UserInfo

from .hub_api import HubAPI
from .state import StateDir

PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def generate_password(length: int = 20) -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def add_local_account(api: HubAPI, state: StateDir, username: str, admin: bool = False) -> str:
    """Create (or reset) a local account; returns the generated password."""
    if api.get_user(username) is None:
        api.create_user(username, admin=admin)
    password = generate_password()
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
    session = orm.new_session_factory(state.db_url)()
    try:
        info = UserInfo.find(session, username)
        if info is None:
            session.add(UserInfo(username=username, password=hashed, is_authorized=True))
        else:
            info.password = hashed
            info.is_authorized = True
        session.commit()
    finally:
        session.close()
    return password


def has_local_account(state: StateDir, username: str) -> bool:
    session = orm.new_session_factory(state.db_url)()
    try:
        return UserInfo.find(session, username) is not None
    finally:
        session.close()
