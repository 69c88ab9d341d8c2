"""A bad tiers file stops the hub at start-up, naming the key and the expected form."""

import json
import subprocess
import sys

import pytest

from hdshub.settings import REPO_ROOT

BAD_TIERS = """tiers:
  public:
    title: {fr: Public, en: Public}
    price: {eur_ht_per_month: 150}
    limits: {cpu: 1, memory: 4 gigas, pids: 512, kernels: 4}
    quotas: {servers: 5, storage: 20G, idle_timeout: 2h, max_age: 12h}
"""


@pytest.fixture
def bad_config(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "tiers.yaml").write_text(BAD_TIERS)
    state = tmp_path / "state"
    state.mkdir()
    (state / "hub.json").write_text(json.dumps({
        "hub_ip": "127.0.0.1", "hub_port": 1, "proxy_api_port": 2,
        "public_url": "http://127.0.0.1:3", "admin_user": "admin",
    }))
    return config, state


def test_jupyterhub_refuses_to_start(bad_config):
    config, state = bad_config
    result = subprocess.run(
        [sys.executable, "-m", "jupyterhub", "-f", str(REPO_ROOT / "hub_config" / "jupyterhub_config.py")],
        env={"HDSHUB_CONFIG_DIR": str(config), "HDSHUB_STATE_DIR": str(state), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, cwd=state,
    )
    assert result.returncode != 0
    assert "key 'tiers.public.limits.memory'" in result.stderr
    assert "a size such as 512M or 4G" in result.stderr
    assert not (state / "jupyterhub.sqlite").exists()


def test_hdshub_up_refuses_before_making_anything(bad_config, tmp_path):
    config, _ = bad_config
    state = tmp_path / "fresh-state"
    result = subprocess.run(
        [sys.executable, "-m", "hdshub.cli", "--state-dir", str(state), "up", "--no-build"],
        env={"HDSHUB_CONFIG_DIR": str(config), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "key 'tiers.public.limits.memory'" in result.stderr
    assert not state.exists()
