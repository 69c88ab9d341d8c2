"""Read the project's policy file (written by the hub, mounted read-only).

A missing or malformed policy stops the server: the guard never runs on guesses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property

POLICY_PATH_ENV = "HDSHUB_POLICY_PATH"
DEFAULT_POLICY_PATH = "/etc/hdshub/policy.json"
SUPPORTED_VERSION = 1
MODES = ("notebook", "dashboard")


class PolicyError(RuntimeError):
    """The policy file is missing or does not say what the guard needs."""


@dataclass(frozen=True)
class Policy:
    project: str
    mode: str
    raw_data_dir: str
    datasets: tuple[dict, ...]
    upload_max_bytes: int
    upload_extensions: frozenset[str]
    notebook_max_bytes: int
    read_max_bytes: int
    output_max_message_bytes: int
    iopub_data_rate_limit: int
    iopub_msg_rate_limit: int
    tier: str
    max_kernels: int
    storage_bytes: int
    storage_warning_percent: int
    idle_timeout_seconds: int
    max_age_seconds: int
    memory_bytes: int

    # Asked on every read: computed once (the policy never changes in a running server).
    @cached_property
    def dataset_sizes(self) -> frozenset[int]:
        return frozenset(int(d["size"]) for d in self.datasets)

    @cached_property
    def dataset_digests(self) -> dict[str, str]:
        return {d["sha256"]: d["name"] for d in self.datasets}


def policy_path() -> str:
    return os.environ.get(POLICY_PATH_ENV) or DEFAULT_POLICY_PATH


def load(path: str | None = None) -> Policy:
    path = path or policy_path()
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise PolicyError(f"policy file {path} cannot be read ({e.strerror}): the hub mounts it "
                          "at every server start; start the server from the hub") from None
    except ValueError as e:
        raise PolicyError(f"policy file {path} is not valid JSON: {e}") from None
    try:
        if raw["version"] != SUPPORTED_VERSION:
            raise PolicyError(f"policy file {path}: version {raw['version']!r}, this guard "
                              f"reads version {SUPPORTED_VERSION}: upgrade the hub and the guard together")
        if raw["mode"] not in MODES:
            raise PolicyError(f"policy file {path}: key 'mode': {raw['mode']!r} is not one of {MODES}")
        return Policy(
            project=str(raw["project"]),
            mode=raw["mode"],
            raw_data_dir=str(raw["raw_data_dir"]).strip("/"),
            datasets=tuple(raw["datasets"]),
            upload_max_bytes=int(raw["uploads"]["max_bytes"]),
            upload_extensions=frozenset(e.lower() for e in raw["uploads"]["allowed_extensions"]),
            notebook_max_bytes=int(raw["notebooks"]["max_bytes"]),
            read_max_bytes=int(raw["contents"]["max_read_bytes"]),
            output_max_message_bytes=int(raw["outputs"]["max_message_bytes"]),
            iopub_data_rate_limit=int(raw["outputs"]["iopub_data_rate_limit"]),
            iopub_msg_rate_limit=int(raw["outputs"]["iopub_msg_rate_limit"]),
            tier=str(raw["quotas"]["tier"]),
            max_kernels=int(raw["quotas"]["kernels"]),
            storage_bytes=int(raw["quotas"]["storage_bytes"]),
            storage_warning_percent=int(raw["quotas"]["storage_warning_percent"]),
            idle_timeout_seconds=int(raw["quotas"]["idle_timeout_seconds"]),
            max_age_seconds=int(raw["quotas"]["max_age_seconds"]),
            memory_bytes=int(raw["quotas"]["memory_bytes"]),
        )
    except KeyError as e:
        raise PolicyError(f"policy file {path}: key {e.args[0]!r} is missing") from None
