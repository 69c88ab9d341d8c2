"""Statistics kits: what a project's containers run, described by stats_kits/<kit>/manifest.yaml.

The hub reads kit manifests to turn a project's kit into an image and to show the kit's
title and description; it never lets a user pick an image directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .validation import ConfigError, load_schema, load_yaml, validate

REPO_ROOT = Path(__file__).resolve().parents[2]
KITS_DIR = REPO_ROOT / "stats_kits"


@dataclass(frozen=True)
class Kit:
    name: str
    title: dict[str, str]
    description: dict[str, str]
    image: str  # repository, without tag
    kernels: tuple[str, ...]

    @property
    def image_tag(self) -> str:
        return f"{self.image}:latest"


def load_kits(kits_dir: Path = KITS_DIR) -> dict[str, Kit]:
    schema = load_schema("kit.schema.yaml")
    kits = {}
    for manifest_path in sorted(kits_dir.glob("*/manifest.yaml")):
        raw = load_yaml(manifest_path)
        validate(raw, schema, str(manifest_path))
        if raw["name"] != manifest_path.parent.name:
            raise ConfigError(
                f"{manifest_path}: key 'name': {raw['name']!r} differs from its folder "
                f"{manifest_path.parent.name!r}. Expected: the kit's folder name"
            )
        kits[raw["name"]] = Kit(
            name=raw["name"],
            title=raw["title"],
            description=raw["description"],
            image=raw["image"],
            kernels=tuple(raw["kernels"]),
        )
    if not kits:
        raise ConfigError(f"{kits_dir}: no kit found (expected stats_kits/<kit>/manifest.yaml)")
    return kits
