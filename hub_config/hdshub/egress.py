"""The egress limits (defaults/egress.yaml), overlaid by the site's egress.yaml.

Only data is loaded here; the guard extension inside each container enforces it, from the
per-project policy file that policy.py writes.
"""

from __future__ import annotations

from pathlib import Path

from .validation import DEFAULTS_DIR, ConfigError, load_schema, load_yaml, validate

DEFAULT_EGRESS_FILE = DEFAULTS_DIR / "egress.yaml"


def load_egress(site_file: Path | None = None) -> dict:
    """The validated egress limits: the defaults, each section a site file names replaced
    key by key."""
    document = load_yaml(DEFAULT_EGRESS_FILE)
    source = str(DEFAULT_EGRESS_FILE)
    if site_file is not None:
        site = load_yaml(site_file)
        source = str(site_file)
        if not isinstance(site, dict):
            raise ConfigError(
                f"{site_file}: (top level): not a mapping. Expected: sections uploads, "
                "notebooks, contents or outputs, as in defaults/egress.yaml")
        for section, values in site.items():
            if isinstance(values, dict) and isinstance(document.get(section), dict):
                document[section] = {**document[section], **values}
            else:
                document[section] = values
    validate(document, load_schema("egress.schema.yaml"), source)
    saved, readable = document["notebooks"]["max_bytes"], document["contents"]["max_read_bytes"]
    if saved > readable:
        # A notebook the guard lets users save but never lets the browser open again.
        raise ConfigError(
            f"{source}: notebooks.max_bytes ({saved}) is larger than contents.max_read_bytes "
            f"({readable}): such notebooks could be saved but never reopened. Set "
            "notebooks.max_bytes at most contents.max_read_bytes.")
    return document
