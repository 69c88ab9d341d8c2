"""Load YAML data files and validate them against their schema.

Policies (tiers, kits) are data. A mistake in them must stop the hub at start-up with a
message naming the file, the key and the expected form, never surface later as a crash.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

DEFAULTS_DIR = Path(__file__).parent / "defaults"


class ConfigError(ValueError):
    """A configuration file is unreadable or does not match its schema."""


def load_yaml(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: is not valid YAML: {e}") from None


def load_schema(name: str) -> dict:
    return load_yaml(DEFAULTS_DIR / name)


def validate(document: object, schema: dict, source: str) -> None:
    """Raise ConfigError for the first schema violation, naming the key and expected form."""
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    error = jsonschema.exceptions.best_match(errors)
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    expected = _expected_form(error, schema)
    message = f"{source}: key '{key}': {error.message}"
    if expected:
        message += f". Expected: {expected}"
    raise ConfigError(message)


def _expected_form(error: jsonschema.ValidationError, schema: dict) -> str:
    """The schema's own description of the failing key, which says how to fix it."""
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        if allowed:
            return "one of the keys " + ", ".join(allowed)
    for candidate in (error.schema, _resolve(error.parent.schema) if error.parent else None):
        if isinstance(candidate, dict) and candidate.get("description"):
            return candidate["description"]
    return ""


def _resolve(schema: dict) -> dict:
    return schema if isinstance(schema, dict) else {}
