"""What a running project container must look like, in one place.

ProjectSpawner sets these (spawner.py); the integration tests and `hdshub doctor` read a
container back from `docker inspect` and check it against the same list, so the test and
the check on a production host can never drift apart. Each problem says what is wrong and
what to do.
"""

from __future__ import annotations

from . import images, kit_environments, naming
from .tiers import TierLimits

NOTEBOOK_USER = "1000:1000"
IN_MEMORY_DIRS = {"/tmp", "/home/jovyan"}
PROJECT_MOUNTS = {"/home/jovyan/data": False, "/home/jovyan/work": True, "/home/jovyan/outputs": True}
# Read-only host folders: the guard extension, the project's policy and the server's own
# internal TLS certificate (containers.py).
GUARD_MOUNTS = {"/opt/hdshub/guard", "/etc/hdshub", "/opt/hdshub/tls"}
# A project's dashboard server (dashboard_server.py): raw data and the published dashboards,
# both read-only, and the Voilà template; no work or outputs area.
DASHBOARD_PURPOSE = "dashboard-server"
DASHBOARD_MOUNTS = {"/home/jovyan/data": False, "/srv/hdshub/dashboards": False}
DASHBOARD_HOST_MOUNTS = {"/opt/hdshub/share/voila/templates"}
# A one-off report run (report_runs.py): no network at all; raw data and work read-only,
# outputs writable; the kit helpers and the report templates read-only; no policy, no
# certificate (it runs no server and talks to no one).
REPORT_PURPOSE = "report-run"
REPORT_MOUNTS = {"/home/jovyan/data": False, "/home/jovyan/work": False, "/home/jovyan/outputs": True}
REPORT_HOST_MOUNTS = {"/opt/hdshub/guard", "/opt/hdshub/share/reports", "/opt/hdshub/share/nbconvert/templates"}
# ... and may read its kit's packages from the environment volume of its own image
# (kit_environments.py), read-only.
REPORT_ENVIRONMENT_MOUNT = kit_environments.ENVIRONMENT_PATH


def container_problems(attrs: dict, slug: str, limits: TierLimits | None) -> list[str]:
    """Problems of a project container (its `docker inspect` attributes) of project `slug`;
    `limits` are its tier's, None when the tier is unknown (then only their presence counts)."""
    config, host = attrs["Config"], attrs["HostConfig"]
    name = attrs.get("Name", "").lstrip("/") or attrs.get("Id", "?")[:12]
    problems = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(f"container {name}: {what}")

    expect(config.get("User") == NOTEBOOK_USER, f"runs as {config.get('User') or 'root'!r}, not {NOTEBOOK_USER}")
    expect(host.get("CapDrop") == ["ALL"] and not host.get("CapAdd"), "does not drop every capability")
    expect("no-new-privileges:true" in (host.get("SecurityOpt") or []), "lacks no-new-privileges")
    expect(host.get("ReadonlyRootfs") is True, "has a writable root filesystem")
    expect(set(host.get("Tmpfs") or {}) == IN_MEMORY_DIRS,
           f"in-memory directories are {sorted(host.get('Tmpfs') or {})}, expected {sorted(IN_MEMORY_DIRS)}")
    expect(host.get("Privileged") is False, "is privileged")
    expect(host.get("Init") is not True,
           "runs Docker's init as PID 1, whose environment (the hub token) kernels can read; "
           "the server must be PID 1 itself (containers.hardening)")
    expect(not host.get("Devices"), "has host devices")
    expect(host.get("PidMode") == "" and host.get("IpcMode") == "private" and host.get("UsernsMode") == "",
           "shares a host namespace (pid, ipc or user)")
    purpose = (config.get("Labels") or {}).get("org.hdshub.purpose")
    dashboard, report = purpose == DASHBOARD_PURPOSE, purpose == REPORT_PURPOSE
    network = "none" if report else naming.network_name(slug)
    expect(host.get("NetworkMode") == network,
           f"is on network {host.get('NetworkMode')!r}, not " +
           ("'none' (a report run talks to no one)" if report else f"its project's {network!r}"))
    expect(not host.get("PortBindings"), "publishes ports on the host")
    expect(report or "JUPYTERHUB_DISABLE_USER_CONFIG=1" in (config.get("Env") or []), "loads user configuration")
    expect(not any("docker.sock" in (m.get("Source") or "") for m in attrs.get("Mounts", [])),
           "has the Docker socket mounted")
    mounts = {m["Destination"]: m for m in attrs.get("Mounts", [])}
    volume_mounts = DASHBOARD_MOUNTS if dashboard else REPORT_MOUNTS if report else PROJECT_MOUNTS
    host_mounts = (REPORT_HOST_MOUNTS if report else
                   GUARD_MOUNTS | (DASHBOARD_HOST_MOUNTS if dashboard else set()))
    expected = set(volume_mounts) | host_mounts
    if report and REPORT_ENVIRONMENT_MOUNT in mounts:
        expected.add(REPORT_ENVIRONMENT_MOUNT)
        environment, labels = mounts[REPORT_ENVIRONMENT_MOUNT], config.get("Labels") or {}
        own = kit_environments.volume_name(labels.get(images.NAME_LABEL, "?"), labels.get(images.HASH_LABEL, "?"))
        expect(environment.get("Name") == own and environment.get("RW") is False,
               f"{REPORT_ENVIRONMENT_MOUNT} is {environment.get('Name')!r}"
               f"{'' if environment.get('RW') is False else ', writable'}, not its image's environment {own!r}, read-only")
    expect(set(mounts) == expected, f"mounts {sorted(mounts)}, expected {sorted(expected)}")
    for destination in host_mounts & set(mounts):
        expect(mounts[destination].get("RW") is False, f"{destination} (from the hub's release) is writable")
    policy = mounts.get("/etc/hdshub", {}).get("Source", "")
    policy_folder = f"/policies/{slug}.dashboard" if dashboard else f"/policies/{slug}"
    expect(not policy or policy.endswith(policy_folder),
           f"/etc/hdshub is {policy!r}, not project {slug}'s policy folder")
    certs = mounts.get("/opt/hdshub/tls", {}).get("Source", "")
    expect(not certs or certs.endswith(f"/server-tls/{attrs.get('Name', '').lstrip('/')}"),
           f"/opt/hdshub/tls is {certs!r}, not this server's own certificate folder")
    for destination, writable in volume_mounts.items():
        mount = mounts.get(destination)
        if mount is None:
            continue
        kind = destination.rsplit("/", 1)[1]
        expect(mount.get("Name") == naming.volume_name(slug, kind),
               f"{destination} is {mount.get('Name')!r}, not {naming.volume_name(slug, kind)!r}")
        expect(mount.get("RW") is writable, f"{destination} is {'read-only' if not mount.get('RW') else 'writable'}")
    memory, cpu_quota, period = host.get("Memory") or 0, host.get("CpuQuota") or 0, host.get("CpuPeriod") or 0
    expect(memory > 0 and host.get("MemorySwap") == memory, "has no memory limit, or swap beyond it")
    expect(cpu_quota > 0 and period > 0, "has no CPU limit")
    expect((host.get("PidsLimit") or 0) > 0, "has no process limit")
    if limits is not None:
        expect(memory == limits.memory_bytes, f"memory limit {memory}, tier says {limits.memory_bytes}")
        expect(host.get("PidsLimit") == limits.pids, f"process limit {host.get('PidsLimit')}, tier says {limits.pids}")
        expect(period > 0 and abs(cpu_quota / period - limits.cpu) < 1e-6,
               f"CPU limit {cpu_quota / period if period else 0}, tier says {limits.cpu}")
    return problems


def network_problems(attrs: dict) -> list[str]:
    """Problems of a project network (its `docker network inspect` attributes)."""
    problems = []
    if attrs.get("Internal") is not True:
        problems.append(f"network {attrs.get('Name')}: not internal (it has a route out)")
    if (attrs.get("Options") or {}).get("com.docker.network.bridge.enable_icc") != "false":
        problems.append(f"network {attrs.get('Name')}: containers on it can reach each other")
    return problems


def leaked_secrets(attrs: dict, secrets: dict[str, str]) -> list[str]:
    """The hub secrets ({name: value}) found in a container's environment."""
    env = "\n".join(attrs["Config"].get("Env") or [])
    name = attrs.get("Name", "").lstrip("/")
    return [f"container {name}: its environment holds the hub's {what}"
            for what, value in secrets.items() if value and value in env]
