"""A real OpenID Connect provider for the login tests: LemonLDAP::NG's portal from Debian.

The portal (Debian package liblemonldap-ng-portal-perl, 2.16) runs as a PSGI application under
Starman on a 127.0.0.1 port, as a child process of the tests stopped with them, with a
configuration written into a temporary directory: nothing under /etc or /var/lib is read or
written, and no system service is involved. Users live in an SQLite table (LemonLDAP::NG's
DBI backend), so a test can change a user's groups at the identity provider while the hub
runs. Their passwords are random per run and stored in clear: LemonLDAP::NG hashes DBI
passwords with SQL functions that SQLite does not have.

What the provider is configured to do, as a hospital IdP would:
- OIDC issuer with discovery, RS256-signed id tokens (a key generated per run), PKCE
  required for the hub's client, the client authenticating with a secret;
- `sub` is an opaque, immutable employee identifier, distinct from the login and the e-mail;
- a `groups` claim (multi-valued) released with the `groups` scope;
- offline access allowed, so a refresh re-reads the user database (LemonLDAP::NG keeps the
  attributes of an online session frozen until the next login).
"""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PORTAL_PSGI = Path("/usr/share/lemonldap-ng/portal/htdocs/index.psgi")
PORTAL_STATIC = Path("/usr/share/lemonldap-ng/portal/htdocs/static")
PORTAL_TEMPLATES = Path("/usr/share/lemonldap-ng/portal/templates")
STARMAN = "starman"
RELYING_PARTY = "hdshub"


def missing_packages() -> str | None:
    """What is missing to run the provider here, or None."""
    if not PORTAL_PSGI.exists():
        return "LemonLDAP::NG portal (liblemonldap-ng-portal-perl): run tests/support/install-oidc-provider.sh"
    if shutil.which(STARMAN) is None:
        return "starman: run tests/support/install-oidc-provider.sh"
    probe = subprocess.run(["perl", "-MDBD::SQLite", "-e", "1"], capture_output=True)
    if probe.returncode != 0:
        return "DBD::SQLite (libdbd-sqlite3-perl): run tests/support/install-oidc-provider.sh"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class IdPUser:
    login: str
    password: str
    sub: str
    mail: str
    groups: tuple[str, ...] = ()


class LemonLDAPProvider:
    """One LemonLDAP::NG portal acting as OpenID Connect provider, for one test session."""

    def __init__(self, workdir: Path, client_id: str, client_secret: str,
                 redirect_uris: list[str], port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = redirect_uris
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "portal.log"

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def users_db(self) -> Path:
        return self.workdir / "users.sqlite"

    # -- configuration -------------------------------------------------------------------

    def write_config(self) -> None:
        for sub in ("conf", "sessions/lock", "psessions/lock", "cache", "notifications"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self._create_users_table()
        (self.workdir / "lemonldap-ng.ini").write_text(self._ini())
        (self.workdir / "conf" / "lmConf-1.json").write_text(json.dumps(self._lmconf(), indent=1))

    def _ini(self) -> str:
        return (
            "[all]\n"
            "logLevel = info\n"
            "logger = Lemonldap::NG::Common::Logger::Std\n"
            "checkTime = 1\n"
            "[configuration]\n"
            "type = File\n"
            f"dirName = {self.workdir / 'conf'}\n"
            "[portal]\n"
            "staticPrefix = /static\n"
            f"templateDir = {PORTAL_TEMPLATES}\n"
            "languages = en, fr\n"
        )

    def _signing_key(self) -> tuple[str, str]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return private, public

    def _lmconf(self) -> dict:
        private, public = self._signing_key()

        def storage(name: str) -> dict:
            return {
                "Directory": str(self.workdir / name),
                "LockDirectory": str(self.workdir / name / "lock"),
                "generateModule": "Lemonldap::NG::Common::Apache::Session::Generate::SHA256",
            }

        dbi = f"dbi:SQLite:dbname={self.users_db}"
        return {
            "cfgNum": 1,
            "cfgAuthor": "hdshub tests",
            "cfgDate": str(int(time.time())),
            "cfgVersion": "2.16.1",
            "portal": f"{self.issuer}/",
            # The portal is reached by IP: its cookies are made host-only in portal.psgi.
            "domain": "127.0.0.1",
            "cookieName": "lemonldap",
            "securedCookie": 0,
            "httpOnly": 1,
            "globalStorage": "Apache::Session::File",
            "globalStorageOptions": storage("sessions"),
            "persistentStorage": "Apache::Session::File",
            "persistentStorageOptions": storage("psessions"),
            "localSessionStorage": "Cache::FileCache",
            "localSessionStorageOptions": {
                "cache_root": str(self.workdir / "cache"), "cache_depth": 3,
                "default_expires_in": 600, "directory_umask": "007",
                "namespace": "lemonldap-ng-sessions",
            },
            "notification": 0,
            "notificationStorageOptions": {"dirName": str(self.workdir / "notifications")},
            "loginHistoryEnabled": 0,
            "portalCheckLogins": 0,
            "locationRules": {"127.0.0.1": {"default": "accept"}},
            "exportedHeaders": {},
            # Users and their attributes: the DBI backend on the test's SQLite file.
            "authentication": "DBI",
            "userDB": "Same",
            "passwordDB": "Null",
            "registerDB": "Null",
            "dbiAuthChain": dbi, "dbiAuthUser": "", "dbiAuthPassword": "",
            "dbiAuthTable": "users", "dbiAuthLoginCol": "login", "dbiAuthPasswordCol": "password",
            "dbiAuthPasswordHash": "",
            "dbiUserChain": dbi, "dbiUserUser": "", "dbiUserPassword": "",
            "dbiUserTable": "users",
            "userPivot": "login",
            "dbiExportedVars": {"uid": "login", "mail": "mail", "employeeNumber": "sub",
                                "hdsGroups": "groups"},
            "exportedVars": {},
            "macros": {},
            "groups": {},
            "whatToTrace": "uid",
            # OpenID Connect issuer.
            "issuerDBOpenIDConnectActivation": 1,
            "oidcServiceMetaDataIssuer": self.issuer,
            "oidcServicePrivateKeySig": private,
            "oidcServicePublicKeySig": public,
            "oidcServiceKeyIdSig": "hdshub-tests",
            "oidcServiceAllowAuthorizationCodeFlow": 1,
            "oidcRPMetaDataExportedVars": {
                RELYING_PARTY: {
                    "email": "mail",
                    "preferred_username": "uid",
                    "groups": "hdsGroups;string;always",
                },
            },
            "oidcRPMetaDataOptionsExtraClaims": {RELYING_PARTY: {"groups": "groups"}},
            "oidcRPMetaDataOptions": {
                RELYING_PARTY: {
                    "oidcRPMetaDataOptionsClientID": self.client_id,
                    "oidcRPMetaDataOptionsClientSecret": self.client_secret,
                    "oidcRPMetaDataOptionsPublic": 0,
                    "oidcRPMetaDataOptionsRedirectUris": " ".join(self.redirect_uris),
                    "oidcRPMetaDataOptionsIDTokenSignAlg": "RS256",
                    "oidcRPMetaDataOptionsUserIDAttr": "employeeNumber",
                    "oidcRPMetaDataOptionsBypassConsent": 1,
                    "oidcRPMetaDataOptionsRequirePKCE": 1,
                    "oidcRPMetaDataOptionsAllowOffline": 1,
                    "oidcRPMetaDataOptionsRefreshToken": 1,
                    "oidcRPMetaDataOptionsAccessTokenExpiration": 3600,
                    "oidcRPMetaDataOptionsIDTokenExpiration": 3600,
                },
            },
        }

    # -- users ---------------------------------------------------------------------------

    def _create_users_table(self) -> None:
        with sqlite3.connect(self.users_db) as db:
            db.execute("CREATE TABLE IF NOT EXISTS users (login TEXT PRIMARY KEY, password TEXT, "
                       "sub TEXT UNIQUE, mail TEXT, groups TEXT)")

    def add_user(self, user: IdPUser) -> None:
        with sqlite3.connect(self.users_db) as db:
            db.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?)",
                       (user.login, user.password, user.sub, user.mail, self._groups(user.groups)))

    def set_groups(self, login: str, groups: list[str] | tuple[str, ...]) -> None:
        with sqlite3.connect(self.users_db) as db:
            db.execute("UPDATE users SET groups = ? WHERE login = ?", (self._groups(groups), login))

    @staticmethod
    def _groups(groups) -> str:
        # LemonLDAP::NG's multi-valued attribute separator (multiValuesSeparator).
        return "; ".join(groups)

    # -- process -------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        self.write_config()
        psgi = self.workdir / "portal.psgi"
        # Debian's PSGI portal, plus its static files (so the pages work in a browser too),
        # plus host-only cookies: the portal always sets `Domain=.<domain>`, which no cookie
        # jar accepts for a host given as an IP address.
        psgi.write_text(
            "use Plack::Builder;\n"
            "use Plack::Util;\n"
            "use Lemonldap::NG::Portal::Main;\n"
            "my $host_only_cookies = sub {\n"
            "  my $app = shift;\n"
            "  sub {\n"
            "    Plack::Util::response_cb($app->(@_), sub {\n"
            "      my $headers = $_[0]->[1];\n"
            "      for (my $i = 0; $i < @$headers; $i += 2) {\n"
            "        $headers->[$i + 1] =~ s/;\\s*domain=[^;]*//i if lc $headers->[$i] eq 'set-cookie';\n"
            "      }\n"
            "    });\n"
            "  };\n"
            "};\n"
            "builder {\n"
            "  enable $host_only_cookies;\n"
            f"  enable 'Static', path => qr{{^/static/}}, root => '{PORTAL_STATIC.parent}';\n"
            "  Lemonldap::NG::Portal::Main->run({});\n"
            "};\n"
        )
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "LLNG_DEFAULTCONFFILE": str(self.workdir / "lemonldap-ng.ini"),
        }
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [STARMAN, "--listen", f"127.0.0.1:{self.port}", "--workers", "2", str(psgi)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"LemonLDAP::NG portal exited:\n{self.log(60)}")
            try:
                reply = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=5)
                if reply.status_code == 200 and reply.json().get("issuer") == self.issuer:
                    return
            except (requests.ConnectionError, requests.Timeout, ValueError):
                pass
            if "Initialization failed" in self.log(200):
                self.stop()
                raise RuntimeError(f"LemonLDAP::NG portal refused its configuration:\n{self.errors()}")
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"LemonLDAP::NG portal not ready after {timeout}s:\n{self.log(60)}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # Starman's master and its workers share the session started for them.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def errors(self) -> str:
        """The portal's error lines, the first place to look when it misbehaves."""
        return "\n".join(line for line in self.log(5000).splitlines() if "[error]" in line)

    def log(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class _Forms(html.parser.HTMLParser):
    """The forms of a page: action, method and input values."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action") or "", "method": (attrs.get("method") or "get").lower(),
                               "fields": {}})
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or ""


def submit_login_form(session: requests.Session, page: requests.Response, login: str,
                      password: str) -> requests.Response:
    """Fill the portal's login form on `page` as a person would, and follow the redirects."""
    parser = _Forms()
    parser.feed(page.text)
    candidates = [f for f in parser.forms if "user" in f["fields"] and "password" in f["fields"]]
    if not candidates:
        raise AssertionError(f"no login form on {page.url}:\n{page.text[:2000]}")
    form = candidates[0]
    fields = {**form["fields"], "user": login, "password": password}
    action = urljoin(page.url, form["action"]) if form["action"] not in ("", "#") else page.url
    return session.post(action, data=fields, allow_redirects=True, timeout=30)
