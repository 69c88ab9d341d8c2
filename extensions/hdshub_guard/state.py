"""The guard's state in this server: its policy, path judge, audit client. Set once at load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .audit import AuditClient
from .paths import PathJudge
from .policy import Policy

if TYPE_CHECKING:
    from .quota import StorageMeter


@dataclass
class GuardState:
    policy: Policy
    judge: PathJudge
    audit: AuditClient
    base_url: str
    storage: "StorageMeter"


_state: GuardState | None = None


def set_guard(state: GuardState) -> None:
    global _state
    _state = state


def guard() -> GuardState:
    if _state is None:
        raise RuntimeError("hdshub guard is not loaded")
    return _state
