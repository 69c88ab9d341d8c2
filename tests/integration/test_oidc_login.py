"""Login through a real OpenID Connect provider (LemonLDAP::NG, started here) into a real
JupyterHub configured by hdshub.oidc, driven over HTTP as a browser would: the hub's login
redirect, the provider's login form, the callback, then the hub's own view of the user."""

from __future__ import annotations

import html
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import yaml

from tests.conftest import missing_prerequisite
from tests.support.oidc_provider import IdPUser, LemonLDAPProvider, free_port, missing_packages, submit_login_form

TEST_CONFIG = Path(__file__).resolve().parents[1] / "support" / "oidc" / "jupyterhub_config.py"
REFRESH_AGE = 2  # seconds: the hub asks the provider again after this


class OIDCHub:
    """A JupyterHub on 127.0.0.1 whose only way in is the OIDC login under test."""

    def __init__(self, workdir: Path, auth: dict, client_secret: str):
        self.workdir = workdir
        self.port = free_port()
        self.public_url = f"http://127.0.0.1:{self.port}"
        self.service_token = secrets.token_hex(32)
        self.auth = auth
        self.client_secret = client_secret
        self.process: subprocess.Popen | None = None

    @property
    def callback_url(self) -> str:
        return f"{self.public_url}/hub/oauth_callback"

    def start(self, timeout: float = 60) -> None:
        config_dir, state = self.workdir / "config", self.workdir / "state"
        config_dir.mkdir(parents=True)
        state.mkdir(mode=0o700)
        secret = config_dir / "oidc-client-secret"
        secret.write_text(self.client_secret + "\n")
        secret.chmod(0o600)
        auth = {"oidc": {**self.auth["oidc"], "client_secret_file": str(secret)}}
        (config_dir / "auth.yaml").write_text(yaml.safe_dump(auth))
        env = {
            **os.environ,
            "HDSHUB_CONFIG_DIR": str(config_dir),
            "HDSHUB_TEST_STATE": str(state),
            "HDSHUB_TEST_PUBLIC_URL": self.public_url,
            "HDSHUB_TEST_HUB_PORT": str(free_port()),
            "HDSHUB_TEST_PROXY_API_PORT": str(free_port()),
            "HDSHUB_TEST_PROXY_TOKEN": secrets.token_hex(32),
            "HDSHUB_TEST_SERVICE_TOKEN": self.service_token,
            "HDSHUB_TEST_REFRESH_AGE": str(REFRESH_AGE),
            # The key that encrypts auth_state; `hdshub up` generates it into the state dir.
            "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
        }
        with open(self.workdir / "jupyterhub.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(TEST_CONFIG)],
                cwd=state, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterHub exited:\n{self.log()}")
            try:
                if requests.get(f"{self.public_url}/hub/login", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"JupyterHub not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log(self, lines: int = 80) -> str:
        path = self.workdir / "jupyterhub.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def api(self, path: str) -> requests.Response:
        return requests.get(f"{self.public_url}/hub/api{path}", timeout=10,
                            headers={"Authorization": f"token {self.service_token}"})

    def user(self, name: str) -> dict | None:
        reply = self.api(f"/users/{name}")
        return reply.json() if reply.status_code == 200 else None


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    missing = missing_packages()
    if missing:
        missing_prerequisite(missing)
    idp = LemonLDAPProvider(tmp_path_factory.mktemp("idp"), client_id="hdshub",
                            client_secret=secrets.token_urlsafe(24), redirect_uris=[])
    yield idp
    idp.stop()


def start_hub(provider: LemonLDAPProvider, workdir: Path, **oidc_keys) -> OIDCHub:
    auth = {"oidc": {
        "preset": "hospital",
        "display_name": "CHU de test",
        "issuer": provider.issuer,
        "client_id": provider.client_id,
        # offline_access: LemonLDAP::NG reads the directory again on refresh only for offline
        # sessions (see the hospital preset).
        "scopes": ["openid", "profile", "email", "groups", "offline_access"],
        "groups": {"allowed": ["hdshub-users"], "admin": ["hdshub-admins"]},
        **oidc_keys,
    }}
    hub = OIDCHub(workdir, auth, provider.client_secret)
    provider.redirect_uris.append(hub.callback_url)
    return hub


@pytest.fixture(scope="module")
def hubs(provider, tmp_path_factory):
    """The main hub (acr loa-2 required, which a password login at this provider gives) and a
    hub requiring an acr this provider never gives. Both are known to the provider before it
    starts, as relying parties registered there."""
    if shutil.which("configurable-http-proxy") is None:
        missing_prerequisite("configurable-http-proxy (bin/setup installs it)")
    main = start_hub(provider, tmp_path_factory.mktemp("hub"), required_acr=["loa-2"])
    strict = start_hub(provider, tmp_path_factory.mktemp("hub-mfa"), required_acr=["urn:hdshub:mfa"])
    provider.start()
    for hub in (main, strict):
        hub.start()
    yield {"main": main, "strict": strict}
    for hub in (main, strict):
        hub.stop()


@pytest.fixture
def hub(hubs, request):
    yield hubs["main"]
    if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
        print(f"\n--- hub log ---\n{hubs['main'].log()}")


def new_user(provider: LemonLDAPProvider, groups: list[str]) -> IdPUser:
    """A person at the provider: login and e-mail differ from the immutable `sub`."""
    tag = secrets.token_hex(3)
    user = IdPUser(login=f"user{tag}", password=secrets.token_urlsafe(12), sub=f"emp-{tag}",
                   mail=f"user{tag}@chu.example", groups=tuple(groups))
    provider.add_user(user)
    return user


def log_in(hub: OIDCHub, user: IdPUser) -> tuple[requests.Session, requests.Response]:
    """The browser's path: hub login -> provider's form -> callback -> hub page."""
    session = requests.Session()
    authorize = session.get(f"{hub.public_url}/hub/oauth_login", timeout=10)
    assert authorize.status_code == 200, authorize.text[:500]
    return session, submit_login_form(session, authorize, user.login, user.password)


def page_text(reply: requests.Response) -> str:
    # The hub's error pages are UTF-8 without saying so in Content-Type.
    return html.unescape(reply.content.decode("utf-8"))


def test_authorize_redirect_carries_pkce(hub, provider):
    reply = requests.get(f"{hub.public_url}/hub/oauth_login", allow_redirects=False, timeout=10)
    assert reply.status_code == 302
    location = urlparse(reply.headers["Location"])
    query = parse_qs(location.query)
    assert f"{location.scheme}://{location.netloc}" == provider.issuer
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43  # base64url of a SHA-256 digest
    assert query["response_type"] == ["code"]
    assert query["redirect_uri"] == [hub.callback_url]
    assert "openid" in query["scope"][0].split()


def test_member_logs_in_as_sub_with_project_roles_from_the_provider(hub, provider):
    user = new_user(provider, ["hdshub:cohorte-a:analyst", "hdshub:cohorte-b:clinician", "staff"])
    _, reply = log_in(hub, user)
    assert reply.status_code == 200, page_text(reply)[:1000]
    assert urlparse(reply.url).path == "/hub/home"
    model = hub.user(user.sub)
    assert model is not None, "the hub user is named after the provider's sub"
    assert set(model["groups"]) == {"cohorte-a:analyst", "cohorte-b:clinician"}
    assert model["admin"] is False
    names = [u["name"] for u in hub.api("/users").json()]
    assert user.login not in names and user.mail not in names
    assert not any("@" in name for name in names)


def test_admin_group_makes_a_hub_operator_not_a_jupyterhub_admin(hub, provider):
    user = new_user(provider, ["hdshub-admins"])
    _, reply = log_in(hub, user)
    assert reply.status_code == 200, page_text(reply)[:1000]
    model = hub.user(user.sub)
    # The hub group of the provider's admin group holds hdshub-operator (configurer; see
    # tests/unit/test_configurer.py), never JupyterHub's admin role.
    assert model["admin"] is False and "hdshub-admins" in model["groups"]


def test_user_in_no_allowed_group_is_refused(hub, provider):
    user = new_user(provider, ["staff", "hdshub:cohorte-a:boss"])
    _, reply = log_in(hub, user)
    assert reply.status_code == 403
    assert "Your account is in no group allowed on this hub" in page_text(reply)
    assert "n'appartient à aucun groupe autorisé" in page_text(reply)
    assert hub.user(user.sub) is None


def test_required_acr_missing_is_refused_with_the_reason(hubs, provider):
    strict = hubs["strict"]
    user = new_user(provider, ["hdshub:cohorte-a:analyst"])
    _, reply = log_in(strict, user)
    assert reply.status_code == 403, page_text(reply)[:1000]
    text = page_text(reply)
    assert "Authentication level too low (loa-2): this hub requires urn:hdshub:mfa" in text
    assert "Niveau d'authentification insuffisant (loa-2)" in text
    assert strict.user(user.sub) is None


def test_group_removed_at_the_provider_is_dropped_at_the_next_refresh(hub, provider):
    user = new_user(provider, ["hdshub:cohorte-a:analyst", "hdshub:cohorte-b:analyst"])
    session, reply = log_in(hub, user)
    assert reply.status_code == 200, page_text(reply)[:1000]
    assert set(hub.user(user.sub)["groups"]) == {"cohorte-a:analyst", "cohorte-b:analyst"}

    provider.set_groups(user.login, ["hdshub:cohorte-a:analyst"])
    time.sleep(REFRESH_AGE + 0.5)
    page = session.get(f"{hub.public_url}/hub/home", timeout=30)
    assert urlparse(page.url).path == "/hub/home"
    assert set(hub.user(user.sub)["groups"]) == {"cohorte-a:analyst"}

    # Out of every group at the provider: the session ends, and logging in again is refused.
    provider.set_groups(user.login, [])
    time.sleep(REFRESH_AGE + 0.5)
    page = session.get(f"{hub.public_url}/hub/home", timeout=30)
    assert urlparse(page.url).path == "/hub/login"
    _, again = log_in(hub, user)
    assert again.status_code == 403
    assert "Failed to get current user" not in hub.log(400)
