"""`hdshub doctor` on the running test hub: quiet when all is well, precise when it is not."""

from __future__ import annotations

import pytest

from hdshub import naming
from hdshub.project_resources import LABEL_PROJECT

pytestmark = pytest.mark.docker


def test_doctor_passes_on_a_hardened_deployment(hub, alice_server):
    result = hub.cli("doctor", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    container = naming.container_name(alice_server.slug, "alice")
    assert f"ok       container {container}: hardened, tier limits applied" in result.stdout
    assert "TLS 1.2 and 1.3 only" in result.stdout
    assert "PROBLEM" not in result.stdout


def test_doctor_names_each_problem_and_its_fix(hub, alice_server, docker_client):
    secret = hub.state_dir / "jupyterhub_cookie_secret"
    rogue = docker_client.containers.run(
        "hdshub/base:latest", entrypoint=["sleep", "300"], user="0", detach=True, network_mode="none",
        name=naming.container_name(alice_server.slug, "rogue"), labels={LABEL_PROJECT: alice_server.slug},
    )
    secret.chmod(0o644)
    try:
        result = hub.cli("doctor", check=False)
    finally:
        secret.chmod(0o600)
        rogue.remove(force=True)
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert f"PROBLEM  {secret} has mode 644: others can read it\n           fix: chmod 600 {secret}" in out
    for issue in ("runs as '0', not 1000:1000", "does not drop every capability", "has a writable root filesystem",
                  f"is on network 'none', not its project's '{naming.network_name(alice_server.slug)}'",
                  "has no memory limit"):
        assert f"PROBLEM  container {rogue.name}: {issue}" in out, issue
    assert f"fix: stop it (docker stop {rogue.name})" in out
    # alice's real server is still judged hardened beside it.
    assert f"ok       container {naming.container_name(alice_server.slug, 'alice')}: hardened" in out
