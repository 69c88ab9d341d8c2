"""Idle servers stopped per tier, by jupyterhub-idle-culler.

The culler has one timeout; ours depend on the project's tier (tiers.yaml,
quotas.idle_timeout). So the culler runs with the shortest tier timeout, and this arbiter
holds each server to its own tier's, read from the spawner's state (ProjectSpawner.get_state).
Idle kernels inside a server are culled by the server itself, with the same timeout.
"""

from __future__ import annotations

import sys
from pathlib import Path

SERVICE = "hdshub-idle-culler"
CONFIG_FILE = Path(__file__).with_name("idle_culler_config.py")
SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers", "admin:server_state"]
STATE_KEY = "idle_timeout_seconds"


def cull_by_tier(inactive, inactive_limit, server) -> bool:
    limit = (server.get("state") or {}).get(STATE_KEY, inactive_limit)
    return inactive.total_seconds() >= limit


def service(idle_timeouts: list[int], api_token: str, internal_certs: Path) -> tuple[dict, dict]:
    """(service, role) of the culler, checking every quarter of the shortest timeout."""
    shortest = min(idle_timeouts)
    every = max(15, min(300, shortest // 4))
    command = [
        sys.executable, "-m", "jupyterhub_idle_culler", f"--config={CONFIG_FILE}",
        f"--timeout={shortest}", f"--cull-every={every}",
        "--cull-default-servers=false", "--remove-named-servers=false",
        # The hub API speaks internal TLS only (configurer.update_tls).
        "--ssl-enabled=true", f"--internal-certs-location={internal_certs}",
    ]
    return (
        {"name": SERVICE, "command": command, "api_token": api_token, "display": False},
        {"name": SERVICE, "scopes": SCOPES, "services": [SERVICE]},
    )
