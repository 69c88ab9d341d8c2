"""The hub's state directory: database, secrets and runtime facts of one deployment.

Secrets are generated here on first use, written atomically with mode 600, and never put
in the repository, in images or in container environments.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path(__file__).resolve().parents[2] / "var" / "state"


def write_private(path: Path, content: str) -> None:
    """Write a file readable by its owner only, atomically (no half-written secret)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)
    os.replace(tmp, path)


@dataclass(frozen=True)
class StateDir:
    path: Path

    @classmethod
    def from_env(cls) -> "StateDir":
        return cls(Path(os.environ.get("HDSHUB_STATE_DIR", DEFAULT_STATE_DIR)).resolve())

    def ensure(self) -> "StateDir":
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        (self.path / "logs").mkdir(exist_ok=True, mode=0o700)
        return self

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.path / 'jupyterhub.sqlite'}"

    @property
    def cookie_secret_file(self) -> Path:
        return self.path / "jupyterhub_cookie_secret"

    @property
    def tls_dir(self) -> Path:
        """Where the generated self-signed certificate and its key live."""
        return self.path / "tls"

    @property
    def internal_certs_dir(self) -> Path:
        """JupyterHub's internal CAs and certificates (internal_tls.py): owner only."""
        return self.path / "internal-ssl"

    @property
    def server_certs_dir(self) -> Path:
        """One folder per running server with its own certificate and key, mounted
        read-only into it; each is owned by the containers' user."""
        return self.path / "server-tls"

    @property
    def policies_dir(self) -> Path:
        """One folder per project holding the policy its containers enforce (mounted
        read-only into them, so the folder is world-readable; nothing secret goes there)."""
        return self.path / "policies"

    @property
    def audit_dir(self) -> Path:
        """The audit trail (audit_log.py): owner only, never mounted into a container."""
        return self.path / "audit"

    @property
    def usage_db(self) -> Path:
        """Monthly usage totals (usage.py): owner only."""
        return self.path / "usage.sqlite"

    @property
    def runtime_file(self) -> Path:
        return self.path / "hub.json"

    def secret(self, name: str, nbytes: int = 32) -> str:
        """A named secret (hex), created on first use."""
        path = self.path / f"{name}.secret"
        if not path.exists():
            write_private(path, secrets.token_hex(nbytes))
        return path.read_text(encoding="utf-8").strip()

    def ensure_cookie_secret(self) -> None:
        if not self.cookie_secret_file.exists():
            write_private(self.cookie_secret_file, secrets.token_hex(32))

    def runtime(self) -> dict:
        """Facts `hdshub up` decided for this deployment (hub address, public URL)."""
        try:
            return json.loads(self.runtime_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RuntimeError(
                f"{self.runtime_file} is missing: start the hub with 'hdshub up' first "
                f"(or set HDSHUB_STATE_DIR to the state directory of a running hub)"
            ) from None

    def write_runtime(self, facts: dict) -> None:
        write_private(self.runtime_file, json.dumps(facts, indent=2, sort_keys=True))
