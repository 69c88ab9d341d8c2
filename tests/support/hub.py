"""A real hub for tests: `hdshub up` in a subprocess, talked to over HTTPS like a user would,
trusting the self-signed certificate it generated and nothing else."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from hdshub import internal_tls
from hdshub.hub_api import HubAPI
from hdshub.state import StateDir

HDSHUB = [sys.executable, "-m", "hdshub.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(state_dir: Path, *argv: str, check: bool = True,
        config_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"HDSHUB_CONFIG_DIR": str(config_dir)} if config_dir else {})}
    result = subprocess.run(
        [*HDSHUB, "--state-dir", str(state_dir), *argv],
        capture_output=True, text=True, timeout=300, env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"hdshub {' '.join(argv)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@dataclass
class RunningHub:
    state_dir: Path
    public_url: str
    hub_port: int
    proxy_api_port: int
    with_demo: bool
    process: subprocess.Popen | None = None
    output: list[str] = field(default_factory=list)
    admin_password: str | None = None
    config_dir: Path | None = None  # HDSHUB_CONFIG_DIR: site tiers, egress, auth

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 180, ignoring_sigint: bool = False) -> None:
        """ignoring_sigint: launch `up` as a shell without job control launches `up &`."""
        argv = [
            *HDSHUB, "--state-dir", str(self.state_dir), "up", "--no-build",
            "--bind-url", self.public_url, "--hub-port", str(self.hub_port),
            "--proxy-api-port", str(self.proxy_api_port),
        ]
        if not self.with_demo:
            argv.append("--no-demo")
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignoring_sigint else None,
            env={**os.environ, "PYTHONUNBUFFERED": "1",
                 **({"HDSHUB_CONFIG_DIR": str(self.config_dir)} if self.config_dir else {})},
        )
        ready = threading.Event()

        def read():
            for line in self.process.stdout:
                self.output.append(line.rstrip("\n"))
                match = re.search(r"Password \(shown once, keep it safe\): (\S+)", line)
                if match:
                    self.admin_password = match.group(1)
                if "hdshub is running" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("hdshub up did not become ready:\n" + "\n".join(self.output)
                                   + "\n--- hub log ---\n" + self.hub_log(80))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        # A hub left behind by a killed `up` would hold the ports.
        for pid_file in ("jupyterhub.pid", "proxy.pid"):
            path = self.state_dir / pid_file
            if path.exists():
                try:
                    os.kill(int(path.read_text().strip()), signal.SIGTERM)
                except (ValueError, ProcessLookupError):
                    pass

    def restart(self) -> None:
        self.stop()
        self.start()

    def hub_log(self, lines: int = 60) -> str:
        path = self.state_dir / "logs" / "jupyterhub.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # -- talking to it -------------------------------------------------------------------

    @property
    def state(self) -> StateDir:
        return StateDir(self.state_dir)

    @property
    def api(self) -> HubAPI:
        return HubAPI.from_state(self.state)

    @property
    def runtime(self) -> dict:
        return self.state.runtime()

    @property
    def ca_file(self) -> str:
        """The certificate the proxy serves (self-signed: it is its own authority)."""
        return self.runtime["tls_cert"]

    def internal_session(self) -> requests.Session:
        """A client on the hub's host holding the hub's internal TLS certificate (as the
        CLI does), for the hub API and proxy API addresses that only speak internal TLS."""
        return internal_tls.client_session(self.state.internal_certs_dir)

    def session(self) -> requests.Session:
        """A fresh client with no credentials, as a new browser would be."""
        session = requests.Session()
        session.verify = self.ca_file
        # REQUESTS_CA_BUNDLE (and proxy variables) would override `verify`: a local hub is
        # reached directly, trusting its own certificate only.
        session.trust_env = False
        return session

    def cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return cli(self.state_dir, *argv, check=check, config_dir=self.config_dir)

    def add_user(self, name: str) -> str:
        return json.loads(self.cli("user", "add", name, "--json").stdout)["password"]

    def user_token(self, name: str) -> str:
        """A token for `name` with that user's own permissions (as its owner would get)."""
        reply = self.api.request("POST", f"/users/{name}/tokens",
                                 json={"note": "tests", "expires_in": 3600})
        return reply["token"]

    def as_user(self, token: str) -> requests.Session:
        session = self.session()
        session.headers["Authorization"] = f"token {token}"
        return session

    def login(self, name: str, password: str) -> requests.Session:
        """A real form login through the proxy, as a browser does it."""
        session = self.session()
        page = session.get(f"{self.public_url}/hub/login", timeout=10)
        xsrf = session.cookies.get("_xsrf") or re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
        reply = session.post(
            f"{self.public_url}/hub/login",
            data={"username": name, "password": password, "_xsrf": xsrf},
            timeout=30, allow_redirects=True,
        )
        assert reply.status_code == 200, reply.text[:500]
        return session
