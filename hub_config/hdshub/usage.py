"""The usage service: what each project used, month by month, measured on the host.

A JupyterHub-managed service (`python -m hdshub.usage`, see configurer.update_services)
samples, every few seconds, the Docker containers labelled with a project and the sizes of
the projects' `work` and `outputs` volumes. Nothing comes from inside a container: a kernel
can write anything into its own files, not into the engine's counters.

Each sample adds to per-month totals in `usage.sqlite` (state directory, mode 600):

- per container and month: seconds seen running, CPU-seconds (the engine's cumulative
  counter; a restarted container is a new container), peak memory;
- per project and month: byte-seconds of storage (size x time between two measures).

A service rather than a task in the hub process: sampling and `du` block, and a hub restart
must not stop the meter (the service is restarted with the hub, and the totals are on disk).
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import docker
import docker.errors

from .project_resources import LABEL_PROJECT
from .state import StateDir

log = logging.getLogger("hdshub.usage")

SERVICE = "hdshub-usage"
DEFAULT_EVERY_SECONDS = 60
#: Volumes are walked (du) less often than containers are sampled: it reads every inode.
DEFAULT_STORAGE_EVERY_SECONDS = 600
#: A gap longer than this many sampling periods, and than a minute, is not counted: the
#: service was stopped (with the hub) or the host asleep, and nothing is guessed.
MAX_GAP_PERIODS = 3
MIN_MAX_GAP_SECONDS = 60
STORAGE_KINDS = ("work", "outputs")

SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    container TEXT NOT NULL, month TEXT NOT NULL, project TEXT NOT NULL, user TEXT NOT NULL,
    purpose TEXT NOT NULL, seconds REAL NOT NULL DEFAULT 0, cpu_seconds REAL NOT NULL DEFAULT 0,
    peak_memory_bytes INTEGER NOT NULL DEFAULT 0, last_time REAL NOT NULL,
    last_cpu_ns INTEGER NOT NULL, PRIMARY KEY (container, month));
CREATE TABLE IF NOT EXISTS storage (
    project TEXT NOT NULL, month TEXT NOT NULL, byte_seconds REAL NOT NULL DEFAULT 0,
    last_bytes INTEGER NOT NULL, last_time REAL NOT NULL, PRIMARY KEY (project, month));
"""


def month_of(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m")


@dataclass(frozen=True)
class ContainerSample:
    container: str
    project: str
    user: str
    purpose: str
    cpu_ns: int
    memory_bytes: int


class UsageStore:
    """The monthly totals. Every sample is one transaction: a crash loses at most it."""

    def __init__(self, path: Path, every_seconds: float = DEFAULT_EVERY_SECONDS):
        new = not path.exists()
        self.db = sqlite3.connect(path, isolation_level=None)
        if new:
            os.chmod(path, 0o600)
        self.db.executescript(SCHEMA)
        self.max_gap = max(every_seconds * MAX_GAP_PERIODS, MIN_MAX_GAP_SECONDS)

    def add_containers(self, samples: list[ContainerSample], now: float) -> None:
        month = month_of(now)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for s in samples:
                previous = self.db.execute(
                    "SELECT last_time, last_cpu_ns FROM containers WHERE container = ? "
                    "ORDER BY last_time DESC LIMIT 1", (s.container,)).fetchone()
                seconds = cpu = 0.0
                if previous is not None:
                    gap = now - previous[0]
                    if 0 < gap <= self.max_gap:
                        seconds = gap
                        cpu = max(0, s.cpu_ns - previous[1]) / 1e9
                self.db.execute(
                    "INSERT INTO containers (container, month, project, user, purpose, seconds, "
                    "cpu_seconds, peak_memory_bytes, last_time, last_cpu_ns) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (container, month) DO UPDATE SET "
                    "seconds = seconds + excluded.seconds, cpu_seconds = cpu_seconds + excluded.cpu_seconds, "
                    "peak_memory_bytes = MAX(peak_memory_bytes, excluded.peak_memory_bytes), "
                    "last_time = excluded.last_time, last_cpu_ns = excluded.last_cpu_ns",
                    (s.container, month, s.project, s.user, s.purpose, seconds, cpu,
                     s.memory_bytes, now, s.cpu_ns))

    def add_storage(self, sizes: dict[str, int], now: float) -> None:
        """Storage is integrated as measured: each interval counts at the size measured at
        its start (sizes change by saves, between two measures)."""
        month = month_of(now)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for project, size in sizes.items():
                previous = self.db.execute(
                    "SELECT last_bytes, last_time FROM storage WHERE project = ? "
                    "ORDER BY last_time DESC LIMIT 1", (project,)).fetchone()
                added = 0.0
                if previous is not None and 0 < now - previous[1]:
                    added = previous[0] * (now - previous[1])
                self.db.execute(
                    "INSERT INTO storage (project, month, byte_seconds, last_bytes, last_time) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (project, month) DO UPDATE SET "
                    "byte_seconds = byte_seconds + excluded.byte_seconds, "
                    "last_bytes = excluded.last_bytes, last_time = excluded.last_time",
                    (project, month, added, size, now))

    def containers(self, month: str) -> list[dict]:
        cursor = self.db.execute(
            "SELECT container, project, user, purpose, seconds, cpu_seconds, peak_memory_bytes "
            "FROM containers WHERE month = ?", (month,))
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def storage(self, month: str) -> dict[str, dict]:
        rows = self.db.execute(
            "SELECT project, byte_seconds, last_bytes FROM storage WHERE month = ?", (month,)).fetchall()
        return {project: {"byte_seconds": bs, "last_bytes": last} for project, bs, last in rows}


# -- reading the host ----------------------------------------------------------------------


#: Where the engine's cgroup counters are, for the cgroupfs and systemd drivers (v1, v2).
CGROUP_ROOT = Path("/sys/fs/cgroup")


def read_cgroup(container_id: str) -> tuple[int, int] | None:
    """(CPU nanoseconds, peak memory bytes) straight from the container's cgroup: exact and
    instant, where the stats API waits a second per container. None if not found here."""
    v1 = (CGROUP_ROOT / "cpuacct" / "docker" / container_id, CGROUP_ROOT / "memory" / "docker" / container_id)
    if v1[0].is_dir():
        return (int((v1[0] / "cpuacct.usage").read_text()),
                int((v1[1] / "memory.max_usage_in_bytes").read_text()))
    for v2 in (CGROUP_ROOT / "system.slice" / f"docker-{container_id}.scope", CGROUP_ROOT / "docker" / container_id):
        if (v2 / "cpu.stat").is_file():
            stat = dict(line.split() for line in (v2 / "cpu.stat").read_text().splitlines())
            peak = v2 / "memory.peak"  # Linux 5.19+; else the current use, the samples' max
            memory = peak if peak.is_file() else v2 / "memory.current"
            return int(stat["usage_usec"]) * 1000, int(memory.read_text())
    return None


def _counters(container) -> tuple[int, int] | None:
    try:
        found = read_cgroup(container.id)
    except (OSError, ValueError, KeyError):
        found = None
    if found is not None:
        return found
    try:  # another layout (rootless engine, remote host): the engine's stats API
        stats = container.stats(stream=False, one_shot=True)
    except docker.errors.NotFound:
        return None  # stopped between the listing and now
    cpu = (stats.get("cpu_stats") or {}).get("cpu_usage", {}).get("total_usage")
    memory = stats.get("memory_stats") or {}
    return (int(cpu), int(memory.get("max_usage") or memory.get("usage") or 0)) if cpu else None


def sample_containers(client: docker.DockerClient) -> list[ContainerSample]:
    samples = []
    for container in client.containers.list(filters={"label": LABEL_PROJECT}):
        counters = _counters(container)
        if counters is None:
            continue  # not running any more
        labels = container.labels
        samples.append(ContainerSample(
            container=container.id, project=labels[LABEL_PROJECT],
            user=labels.get("org.hdshub.user", ""), purpose=labels.get("org.hdshub.purpose", ""),
            cpu_ns=counters[0], memory_bytes=counters[1]))
    return samples


def project_storage(client: docker.DockerClient) -> dict[str, int]:
    """Bytes used by each project's work and outputs volumes, measured on the host."""
    sizes: dict[str, int] = {}
    for volume in client.volumes.list(filters={"label": LABEL_PROJECT}):
        labels = volume.attrs.get("Labels") or {}
        if labels.get("org.hdshub.volume") not in STORAGE_KINDS:
            continue
        project = labels[LABEL_PROJECT]
        sizes[project] = sizes.get(project, 0) + _disk_usage(Path(volume.attrs["Mountpoint"]))
    return sizes


def _disk_usage(folder: Path) -> int:
    result = subprocess.run(["du", "-s", "-B1", "--", str(folder)], capture_output=True, text=True)
    if result.returncode != 0 or not result.stdout:
        log.warning("hdshub usage: du %s failed: %s", folder, result.stderr.strip())
        return 0
    return int(result.stdout.split()[0])


def run(state: StateDir, every: float, storage_every: float) -> None:
    client = docker.from_env()
    store = UsageStore(state.usage_db, every)
    next_storage = 0.0
    while True:
        started = time.time()
        try:
            store.add_containers(sample_containers(client), time.time())
            if started >= next_storage:
                store.add_storage(project_storage(client), time.time())
                next_storage = started + storage_every
        except (docker.errors.DockerException, sqlite3.Error, OSError) as error:
            log.warning("hdshub usage: sample failed (%s); next one in %ss", error, every)
        time.sleep(max(0.0, every - (time.time() - started)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hdshub.usage", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--every", type=float, default=DEFAULT_EVERY_SECONDS)
    parser.add_argument("--storage-every", type=float, default=DEFAULT_STORAGE_EVERY_SECONDS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(asctime)s hdshub-usage] %(message)s")
    try:
        run(StateDir(args.state_dir.resolve()), args.every, args.storage_every)
    except KeyboardInterrupt:  # the hub stops its services with SIGINT/SIGTERM
        pass


if __name__ == "__main__":
    main()
