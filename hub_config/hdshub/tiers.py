"""Tiers of service (public 150 € HT, private 300 € HT, custom) and their limits.

The tiers file is the only source of the numbers the spawner enforces. Defaults ship in
defaults/tiers.yaml; a site file adds tiers or replaces a default tier as a whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .validation import DEFAULTS_DIR, ConfigError, load_schema, load_yaml, validate

DEFAULT_TIERS_FILE = DEFAULTS_DIR / "tiers.yaml"
_SIZE_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_IDLE_TIMEOUT = 60


@dataclass(frozen=True)
class TierLimits:
    """What one notebook server of a project on this tier may use."""

    cpu: float
    memory_bytes: int
    pids: int
    kernels: int


@dataclass(frozen=True)
class TierQuotas:
    """What a whole project on this tier may use."""

    servers: int
    storage_bytes: int
    idle_timeout_seconds: int
    max_age_seconds: int


@dataclass(frozen=True)
class Tier:
    name: str
    title: dict[str, str]
    price_eur_ht_per_month: float | None  # None: on quote
    limits: TierLimits
    quotas: TierQuotas


def parse_size(text: str) -> int:
    """'512M' -> bytes. The schema has already checked the form."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([KMG])", text)
    if not match:
        raise ConfigError(f"'{text}' is not a size such as 512M or 4G")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def enforced(tier: Tier) -> dict:
    """The tier's numbers in plain units, as the spawner and the guard's policy take them."""
    return {
        "cpu": tier.limits.cpu,
        "memory_bytes": tier.limits.memory_bytes,
        "pids": tier.limits.pids,
        "kernels": tier.limits.kernels,
        "servers": tier.quotas.servers,
        "storage_bytes": tier.quotas.storage_bytes,
        "idle_timeout_seconds": tier.quotas.idle_timeout_seconds,
        "max_age_seconds": tier.quotas.max_age_seconds,
    }


def parse_duration(text: str) -> int:
    """'45m' -> seconds. The schema has already checked the form."""
    match = re.fullmatch(r"([0-9]+)([smhd])", text)
    if not match:
        raise ConfigError(f"'{text}' is not a duration such as 45m, 2h or 1d")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def load_tiers(site_file: Path | None = None) -> dict[str, Tier]:
    """Default tiers, overlaid by the site's tiers file when given, validated as a whole."""
    document = load_yaml(DEFAULT_TIERS_FILE)
    source = str(DEFAULT_TIERS_FILE)
    if site_file is not None:
        site = load_yaml(site_file)
        source = str(site_file)
        if not isinstance(site, dict) or not isinstance(site.get("tiers"), dict):
            raise ConfigError(
                f"{site_file}: key 'tiers': missing. Expected: a mapping of tier names "
                "to tiers, as in defaults/tiers.yaml"
            )
        document = {"tiers": {**document["tiers"], **site["tiers"]}}
    validate(document, load_schema("tiers.schema.yaml"), source)
    tiers = {}
    for name, raw in document["tiers"].items():
        memory = parse_size(raw["limits"]["memory"])
        if memory < 256 * 1024**2:
            raise ConfigError(
                f"{source}: key 'tiers.{name}.limits.memory': {raw['limits']['memory']} is "
                "too small. Expected: at least 256M, a server does not start with less"
            )
        tiers[name] = Tier(
            name=name,
            title=raw["title"],
            price_eur_ht_per_month=raw["price"].get("eur_ht_per_month"),
            limits=TierLimits(
                cpu=float(raw["limits"]["cpu"]),
                memory_bytes=memory,
                pids=int(raw["limits"]["pids"]),
                kernels=int(raw["limits"]["kernels"]),
            ),
            quotas=_quotas(source, name, raw["quotas"]),
        )
    return tiers


def _quotas(source: str, name: str, raw: dict) -> TierQuotas:
    idle = parse_duration(raw["idle_timeout"])
    if idle < MIN_IDLE_TIMEOUT:
        raise ConfigError(
            f"{source}: key 'tiers.{name}.quotas.idle_timeout': {raw['idle_timeout']} is too "
            "short. Expected: at least 60s, or servers stop while users read their results")
    return TierQuotas(
        servers=int(raw["servers"]),
        storage_bytes=parse_size(raw["storage"]),
        idle_timeout_seconds=idle,
        max_age_seconds=parse_duration(raw["max_age"]),
    )
