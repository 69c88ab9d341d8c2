"""A small client of the hub REST API, used by the CLI: the one way in for project data."""

from __future__ import annotations

from urllib.parse import quote

import requests

from . import internal_tls
from .settings import CLI_SERVICE
from .state import StateDir


class HubAPIError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"hub answered {status}: {message}")
        self.status = status
        self.message = message


class HubAPI:
    def __init__(self, url: str, token: str, timeout: float = 30, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"token {token}"
        self.timeout = timeout

    @classmethod
    def from_state(cls, state: StateDir) -> "HubAPI":
        runtime = state.runtime()
        return cls(
            f"https://{runtime['hub_ip']}:{runtime['hub_port']}/hub/api",
            state.secret("cli-api-token"),
            session=internal_tls.client_session(state.internal_certs_dir),
        )

    def request(self, method: str, path: str, json=None, ok=(200, 201, 202, 204)):
        try:
            response = self.session.request(
                method, self.url + path, json=json, timeout=self.timeout
            )
        except requests.ConnectionError:
            raise HubAPIError(
                0, f"no hub at {self.url}: is it running? ('hdshub up')"
            ) from None
        if response.status_code not in ok:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise HubAPIError(response.status_code, message)
        return response.json() if response.content else None

    # -- users and groups -----------------------------------------------------------------

    def get_user(self, name: str) -> dict | None:
        try:
            return self.request("GET", f"/users/{quote(name, safe='')}")
        except HubAPIError as e:
            if e.status == 404:
                return None
            raise

    def create_user(self, name: str, admin: bool = False) -> dict:
        return self.request("POST", f"/users/{quote(name, safe='')}", json={"admin": admin})

    def get_group(self, name: str) -> dict | None:
        try:
            return self.request("GET", f"/groups/{quote(name, safe='')}")
        except HubAPIError as e:
            if e.status == 404:
                return None
            raise

    def groups(self) -> list[dict]:
        return self.request("GET", "/groups")

    def create_group(self, name: str) -> dict:
        return self.request("POST", f"/groups/{quote(name, safe='')}", json={})

    def delete_group(self, name: str) -> None:
        self.request("DELETE", f"/groups/{quote(name, safe='')}")

    def set_group_properties(self, name: str, properties: dict) -> dict:
        return self.request("PUT", f"/groups/{quote(name, safe='')}/properties", json=properties)

    def add_group_users(self, name: str, users: list[str]) -> dict:
        return self.request("POST", f"/groups/{quote(name, safe='')}/users", json={"users": users})
