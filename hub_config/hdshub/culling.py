"""Idle servers stopped per tier, by jupyterhub-idle-culler.

The culler has one timeout; ours depend on the project's tier (tiers.yaml,
quotas.idle_timeout). So the culler runs with the shortest tier timeout, and this arbiter
holds each server to its own tier's, read from the spawner's state (ProjectSpawner.get_state).
Idle kernels inside a server are culled by the server itself, with the same timeout.

The culler judges a server by the last activity the server reported to the hub. JupyterHub's
servers report every 5 minutes by default: under a shorter timeout a server in use would be
stopped as idle. So each server reports, and the culler checks, at check_interval of the
timeout.
"""

from __future__ import annotations

import sys
from pathlib import Path

SERVICE = "hdshub-idle-culler"
CONFIG_FILE = Path(__file__).with_name("idle_culler_config.py")
SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers", "admin:server_state"]
STATE_KEY = "idle_timeout_seconds"


def check_interval(idle_timeout: int) -> int:
    """Seconds between two looks at a server's activity under this idle timeout: a quarter of
    it, from 15 s (not to load the hub) to 5 min (JupyterHub's own default)."""
    return max(15, min(300, idle_timeout // 4))


def cull_by_tier(inactive, inactive_limit, server) -> bool:
    limit = (server.get("state") or {}).get(STATE_KEY, inactive_limit)
    return inactive.total_seconds() >= limit


def service(idle_timeouts: list[int], api_token: str, internal_certs: Path) -> tuple[dict, dict]:
    """(service, role) of the culler, checking as often as the shortest timeout needs."""
    shortest = min(idle_timeouts)
    command = [
        sys.executable, "-m", "jupyterhub_idle_culler", f"--config={CONFIG_FILE}",
        f"--timeout={shortest}", f"--cull-every={check_interval(shortest)}",
        "--cull-default-servers=false", "--remove-named-servers=false",
        # The hub API speaks internal TLS only (configurer.update_tls).
        "--ssl-enabled=true", f"--internal-certs-location={internal_certs}",
    ]
    return (
        {"name": SERVICE, "command": command, "api_token": api_token, "display": False},
        {"name": SERVICE, "scopes": SCOPES, "services": [SERVICE]},
    )
