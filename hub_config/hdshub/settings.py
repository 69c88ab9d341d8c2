"""Everything the hub needs to know, gathered and validated once at start-up.

Sources, in one place: the state directory (secrets, database, the facts `hdshub up`
decided), the site configuration directory (tiers), and the kit manifests. A bad file
stops the hub here with a message naming the key and the expected form.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .egress import load_egress
from .kits import Kit, load_kits
from .oidc import OIDCSettings, load_oidc_settings
from .state import StateDir
from .tiers import Tier, load_tiers

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_SERVICE = "hdshub-cli"


@dataclass(frozen=True)
class Settings:
    state: StateDir
    tiers: dict[str, Tier]
    kits: dict[str, Kit]
    hub_ip: str
    hub_port: int
    proxy_api_port: int
    public_url: str
    admin_user: str
    config_dir: Path | None = None
    templates_dir: Path = REPO_ROOT / "templates" / "hub"
    oidc: OIDCSettings | None = None  # None: local accounts (the embedded default)
    # The certificate and key the proxy serves on public_url (`hdshub up` always sets them).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Egress limits the guard enforces (defaults/egress.yaml and the site's egress.yaml).
    egress: dict | None = None
    # How often the usage service samples containers (volumes: ten times less often).
    usage_every_seconds: float = 60


def usage_every_from_env() -> float:
    """HDSHUB_USAGE_EVERY: seconds between two usage samples (default 60)."""
    text = os.environ.get("HDSHUB_USAGE_EVERY", "60")
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0
    if not 1 <= seconds <= 3600:
        raise ValueError(f"HDSHUB_USAGE_EVERY={text!r}: expected seconds between 1 and 3600 "
                         "(unset it for the default, 60)")
    return seconds


def site_file(config_dir: Path | None, name: str) -> Path | None:
    if config_dir is None:
        return None
    path = config_dir / name
    return path if path.exists() else None


def load_settings(state: StateDir | None = None) -> Settings:
    state = state or StateDir.from_env()
    config_dir = Path(os.environ["HDSHUB_CONFIG_DIR"]) if os.environ.get("HDSHUB_CONFIG_DIR") else None
    runtime = state.runtime()
    return Settings(
        state=state,
        tiers=load_tiers(site_file(config_dir, "tiers.yaml")),
        kits=load_kits(),
        hub_ip=runtime["hub_ip"],
        hub_port=int(runtime["hub_port"]),
        proxy_api_port=int(runtime["proxy_api_port"]),
        public_url=runtime["public_url"],
        admin_user=runtime["admin_user"],
        config_dir=config_dir,
        oidc=load_oidc_settings(config_dir),
        tls_cert=Path(runtime["tls_cert"]),
        tls_key=Path(runtime["tls_key"]),
        egress=load_egress(site_file(config_dir, "egress.yaml")),
        usage_every_seconds=usage_every_from_env(),
    )
