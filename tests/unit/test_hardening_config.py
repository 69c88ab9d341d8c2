"""The hardening settings apply(c, settings) gives the hub, the proxy and project servers.

tests/security checks their effect on a running hub; these say where each one comes from."""

from __future__ import annotations

import ast

import pytest
from traitlets.config import Config

from hdshub import configurer, tls
from hdshub.kits import load_kits
from hdshub.settings import Settings
from hdshub.state import StateDir
from hdshub.tiers import load_tiers


@pytest.fixture
def c(tmp_path):
    state = StateDir(tmp_path).ensure()
    files = tls.self_signed(state.tls_dir, "127.0.0.1")
    settings = Settings(
        state=state, tiers=load_tiers(), kits=load_kits(), hub_ip="172.30.0.1", hub_port=8081,
        proxy_api_port=8001, public_url="https://127.0.0.1:8000", admin_user="admin",
        tls_cert=files.cert, tls_key=files.key,
    )
    config = Config()
    configurer.apply(config, settings)
    return config


def test_the_proxy_serves_tls_1_2_and_up_with_strong_suites(c, tmp_path):
    assert c.JupyterHub.ssl_cert == str(tmp_path / "tls" / "cert.pem")
    assert c.JupyterHub.ssl_key == str(tmp_path / "tls" / "key.pem")
    command = c.ConfigurableHTTPProxy.command
    assert "NODE_OPTIONS=--tls-min-v1.2" in command
    ciphers = command[command.index("--ssl-ciphers") + 1].split(":")
    assert all("GCM" in s or "CHACHA20" in s for s in ciphers)
    assert all(s.startswith(("TLS_", "ECDHE-")) for s in ciphers)  # forward secrecy


def test_cookies_and_tokens(c):
    assert c.JupyterHub.cookie_host_prefix_enabled is True
    assert c.JupyterHub.cookie_max_age_days <= 1
    assert 0 < c.JupyterHub.token_expires_in_max_seconds <= 7 * 24 * 3600
    assert c.JupyterHub.tornado_settings["cookie_options"]["secure"] is True
    assert c.ProjectSpawner.environment["JUPYTERHUB_ALLOW_TOKEN_IN_URL"] == "0"


def test_hub_pages_headers(c):
    headers = c.JupyterHub.tornado_settings["headers"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"].split("; ")
    assert headers["Strict-Transport-Security"] == tls.HSTS


def test_project_servers_get_their_headers_as_a_python_literal(c):
    (settings_arg,) = [a for a in c.ProjectSpawner.args if a.startswith("--ServerApp.tornado_settings=")]
    server_settings = ast.literal_eval(settings_arg.split("=", 1)[1])
    assert server_settings["headers"]["Content-Security-Policy"].startswith("frame-ancestors 'none'")
    assert server_settings["headers"]["Strict-Transport-Security"] == tls.HSTS
    assert server_settings["nbconvert_csp_sandbox"] is True
    assert f"--HubOAuth.cache_max_age={configurer.SERVER_TOKEN_CACHE_SECONDS}" in c.ProjectSpawner.args

