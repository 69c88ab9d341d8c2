"""The per-project policy file that the guard extension enforces inside the container.

The hub writes it on every server start, from the project record (its raw datasets and their
sha256) and the egress limits; the container sees it read-only at /etc/hdshub/policy.json.
It is data only: the guard shares this format with the hub, never code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .projects import Project

POLICY_VERSION = 1
#: Where the container sees its policy (a read-only mount of the project's policy folder;
#: a folder, not a file, so that a rewrite by rename reaches servers started later only).
CONTAINER_POLICY_DIR = "/etc/hdshub"
MODES = ("notebook", "dashboard")


def build(project: Project, egress: dict, tier: dict, mode: str = "notebook") -> dict:
    if mode not in MODES:
        raise ValueError(f"unknown server mode {mode!r}: expected one of {', '.join(MODES)}")
    return {
        "version": POLICY_VERSION,
        "project": project.slug,
        "mode": mode,
        # Paths are relative to the server's root directory (the home directory).
        "raw_data_dir": "data",
        "datasets": [
            {"name": d["name"], "sha256": d["sha256"], "size": d["size"]}
            for d in project.datasets
        ],
        **{section: dict(egress[section]) for section in ("uploads", "notebooks", "contents", "outputs")},
        # The project's tier, as far as the server enforces it (tiers.yaml).
        "quotas": {
            "tier": project.tier,
            "kernels": tier["kernels"],
            "storage_bytes": tier["storage_bytes"],
            "storage_warning_percent": egress["storage"]["warning_percent"],
            "idle_timeout_seconds": tier["idle_timeout_seconds"],
            "max_age_seconds": tier["max_age_seconds"],
            "memory_bytes": tier["memory_bytes"],
        },
    }


def write(folder: Path, policy: dict) -> Path:
    """Write policy.json into `folder` atomically, world-readable, owned by the hub (root).

    The folder is the project's own, so the mount shows a container this project's policy
    and nothing else.
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o755)
    os.chmod(folder, 0o755)
    path = folder / "policy.json"
    tmp = folder / ".policy.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(policy, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
