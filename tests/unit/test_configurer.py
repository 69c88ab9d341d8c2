"""apply(c, settings) on a bare Config: what the hub will run with."""

import re
from pathlib import Path

import pytest
from traitlets.config import Config

from hdshub import configurer, culling
from hdshub.kits import load_kits
from hdshub.settings import Settings
from hdshub.state import StateDir
from hdshub.tiers import load_tiers


@pytest.fixture
def settings(tmp_path):
    state = StateDir(tmp_path).ensure()
    return Settings(
        state=state, tiers=load_tiers(), kits=load_kits(), hub_ip="172.30.0.1", hub_port=8081,
        proxy_api_port=8001, public_url="http://127.0.0.1:8000", admin_user="admin",
    )


@pytest.fixture
def c(settings):
    config = Config()
    configurer.apply(config, settings)
    return config


def test_spawner_limits_come_from_the_tiers_file(c, settings):
    assert c.JupyterHub.spawner_class == "hdshub.spawner.ProjectSpawner"
    for name, tier in settings.tiers.items():
        enforced = c.ProjectSpawner.tiers[name]
        assert (enforced["cpu"], enforced["memory_bytes"], enforced["pids"], enforced["kernels"]) == (
            tier.limits.cpu, tier.limits.memory_bytes, tier.limits.pids, tier.limits.kernels)
        assert (enforced["servers"], enforced["storage_bytes"], enforced["idle_timeout_seconds"],
                enforced["max_age_seconds"]) == (
            tier.quotas.servers, tier.quotas.storage_bytes, tier.quotas.idle_timeout_seconds,
            tier.quotas.max_age_seconds)


def test_every_kit_maps_to_its_image(c, settings):
    assert c.ProjectSpawner.kit_images == {k: v.image_tag for k, v in settings.kits.items()}
    assert c.ProjectSpawner.pull_policy == "never"


def test_hub_api_is_not_on_all_interfaces(c):
    assert c.JupyterHub.hub_bind_url == "https://172.30.0.1:8081"
    assert "0.0.0.0" not in c.JupyterHub.hub_bind_url


def test_hub_proxy_and_servers_talk_internal_tls(c, settings):
    assert c.JupyterHub.internal_ssl is True
    assert c.JupyterHub.internal_certs_location == str(settings.state.internal_certs_dir)
    # The hub's certificate names the address containers reach it at.
    assert c.JupyterHub.trusted_alt_names == ["IP:172.30.0.1"]
    assert c.ConfigurableHTTPProxy.api_url.startswith("https://127.0.0.1:")
    assert c.ProjectSpawner.use_internal_hostname is False
    culler = next(s for s in c.JupyterHub.services if s["name"] == culling.SERVICE)
    assert "--ssl-enabled=true" in culler["command"]


def test_user_configuration_and_self_signup_are_off(c):
    assert c.ProjectSpawner.disable_user_config is True
    assert c.LocalAccountsAuthenticator.enable_signup is False
    assert re.match(c.Authenticator.username_pattern, "alice")
    assert not re.match(c.Authenticator.username_pattern, "Alice@chu.fr")


def test_services_never_reach_users_servers(c, settings):
    """Neither the CLI nor the idle culler may open a user's server."""
    for role in c.JupyterHub.load_roles:
        assert not any(scope.startswith("access:") for scope in role["scopes"]), role
    services = {service["name"]: service for service in c.JupyterHub.services}
    assert services["hdshub-cli"]["api_token"] == settings.state.secret("cli-api-token")
    assert "delete:servers" in next(r for r in c.JupyterHub.load_roles if r["name"] == "hdshub-idle-culler")["scopes"]


def test_the_idle_culler_holds_each_server_to_its_tier(c, settings):
    from datetime import timedelta

    from hdshub.culling import cull_by_tier

    culler = next(s for s in c.JupyterHub.services if s["name"] == "hdshub-idle-culler")
    shortest = min(t.quotas.idle_timeout_seconds for t in settings.tiers.values())
    assert f"--timeout={shortest}" in culler["command"]
    server = {"state": {"idle_timeout_seconds": 4 * 3600}}
    assert not cull_by_tier(timedelta(hours=3), shortest, server)
    assert cull_by_tier(timedelta(hours=4), shortest, server)
    assert cull_by_tier(timedelta(seconds=shortest), shortest, {"state": {}})


def test_secrets_are_private_files(settings):
    settings.state.secret("cli-api-token")
    settings.state.ensure_cookie_secret()
    for path in Path(settings.state.path).iterdir():
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0, path
    assert settings.state.path.stat().st_mode & 0o077 == 0


def test_nobody_is_a_jupyterhub_admin_operators_hold_a_narrower_role(c, settings):
    assert c.Authenticator.admin_users == set()
    operator = next(r for r in c.JupyterHub.load_roles if r["name"] == configurer.OPERATOR_ROLE)
    assert operator["users"] == [settings.admin_user]
    assert not any(s.startswith(("access:", "admin:auth_state", "admin:users", "tokens"))
                   for s in operator["scopes"])
