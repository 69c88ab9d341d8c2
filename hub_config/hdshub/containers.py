"""How every container that runs project code is locked down.

Notebook servers (spawner.py), report runs and dashboard servers all take their settings
from here, so that no way of running a project's code is weaker than another: non-root,
no capability, read-only root file system, private IPC, tier limits, the project's volumes
(raw data read-only) and the guard extension with the project's policy, both read-only.
"""

from __future__ import annotations

import math
from pathlib import Path

from . import naming, project_resources
from .policy import CONTAINER_POLICY_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
HOME = "/home/jovyan"
NOTEBOOK_UID = "1000:1000"
#: The guard extension comes from the hub's own release, mounted read-only: it cannot be
#: changed from inside, and a hub upgrade upgrades every project's guard at its next start.
GUARD_SOURCE = REPO_ROOT / "extensions"
GUARD_MOUNT = "/opt/hdshub/guard"
#: The server's internal TLS certificate, key and trusted CAs (internal_tls.py), read-only.
CERTS_MOUNT = "/opt/hdshub/tls"
CPU_PERIOD = 100_000  # microseconds, Docker's default
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_MAX_THREADS")


def hardening(tmp_size: str = "512m", home_size: str = "128m") -> dict:
    """Docker host settings (docker-py create_host_config keywords) of every project
    container, whatever it runs; resources come from limits()."""
    return {
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        # No separate init: the container's command is PID 1 itself. Docker's init would run
        # as the notebook user with the server's environment (hub token included) readable
        # by every kernel in /proc/1/environ; and processes of the same namespace cannot
        # send PID 1 a signal it has no handler for, so a kernel can neither SIGKILL nor
        # SIGSTOP the server (the guard reaps orphans: hdshub_guard/reaper.py).
        "init": False,
        "privileged": False,
        "ipc_mode": "private",
        "tmpfs": {
            "/tmp": f"rw,nosuid,nodev,noexec,size={tmp_size}",
            HOME: f"rw,nosuid,nodev,noexec,size={home_size},uid=1000,gid=1000,mode=0700",
        },
    }


def limits(tier: dict) -> dict:
    """The tier's limits as docker-py create_host_config keywords. No swap beyond the tier's
    memory: a memory hog is stopped, not slowed down. CPU as a quota per period, as
    DockerSpawner's cpu_limit sets it, so that every project container reads the same in
    `docker inspect` (hardening.py)."""
    return {
        "mem_limit": tier["memory_bytes"],
        "memswap_limit": tier["memory_bytes"],
        "cpu_period": CPU_PERIOD,
        "cpu_quota": int(tier["cpu"] * CPU_PERIOD),
        "pids_limit": tier["pids"],
    }


def thread_environment(tier: dict) -> dict[str, str]:
    """Numerical libraries start one thread per *host* core unless told otherwise; threads
    count against the pids limit and beyond the CPU quota they only contend."""
    threads = str(max(1, math.ceil(tier["cpu"])))
    return {name: threads for name in THREAD_VARIABLES}


def guard_environment() -> dict[str, str]:
    return {"PYTHONPATH": GUARD_MOUNT, "HDSHUB_POLICY_PATH": f"{CONTAINER_POLICY_DIR}/policy.json"}


def project_mounts(volumes: dict[str, str], policy_folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """({source: path} read-write, {source: path} read-only) of a project container.

    Sources are volume names or host paths, as DockerSpawner's volumes take them.
    """
    read_write = {volumes["work"]: f"{HOME}/work", volumes["outputs"]: f"{HOME}/outputs"}
    read_only = {
        volumes["data"]: f"{HOME}/data",
        str(GUARD_SOURCE): GUARD_MOUNT,
        str(policy_folder): CONTAINER_POLICY_DIR,
    }
    return read_write, read_only


def binds(read_write: dict[str, str], read_only: dict[str, str]) -> dict[str, dict]:
    """The same mounts as docker-py `binds`, for containers made without DockerSpawner."""
    return {
        **{source: {"bind": path, "mode": "rw"} for source, path in read_write.items()},
        **{source: {"bind": path, "mode": "ro"} for source, path in read_only.items()},
    }


def labels(project: str, user: str, purpose: str) -> dict[str, str]:
    return {
        project_resources.LABEL_PROJECT: project,
        "org.hdshub.user": naming.escape_username(user),
        "org.hdshub.purpose": purpose,
    }
