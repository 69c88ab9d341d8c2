"""apply(c, settings) on a bare Config: what the hub will run with."""

import re
from pathlib import Path

import pytest
from traitlets.config import Config

from hdshub import configurer
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
        assert c.ProjectSpawner.tiers[name] == {
            "cpu": tier.limits.cpu, "memory_bytes": tier.limits.memory_bytes, "pids": tier.limits.pids,
        }


def test_every_kit_maps_to_its_image(c, settings):
    assert c.ProjectSpawner.kit_images == {k: v.image_tag for k, v in settings.kits.items()}
    assert c.ProjectSpawner.pull_policy == "never"


def test_hub_api_is_not_on_all_interfaces(c):
    assert c.JupyterHub.hub_bind_url == "http://172.30.0.1:8081"
    assert "0.0.0.0" not in c.JupyterHub.hub_bind_url


def test_user_configuration_and_self_signup_are_off(c):
    assert c.ProjectSpawner.disable_user_config is True
    assert c.LocalAccountsAuthenticator.enable_signup is False
    assert re.match(c.Authenticator.username_pattern, "alice")
    assert not re.match(c.Authenticator.username_pattern, "Alice@chu.fr")


def test_cli_token_never_reaches_users_servers(c, settings):
    (role,) = c.JupyterHub.load_roles
    assert not any(scope.startswith("access:") for scope in role["scopes"])
    (service,) = c.JupyterHub.services
    assert service["api_token"] == settings.state.secret("cli-api-token")


def test_secrets_are_private_files(settings):
    settings.state.secret("cli-api-token")
    settings.state.ensure_cookie_secret()
    for path in Path(settings.state.path).iterdir():
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0, path
    assert settings.state.path.stat().st_mode & 0o077 == 0
