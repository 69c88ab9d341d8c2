"""A real headless Chromium (Debian's), driven by Playwright; never a downloaded browser."""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

import pytest

from tests.conftest import missing_prerequisite
from tests.integration.conftest import docker_client, hub, new_project  # noqa: F401 (fixtures)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def trusted_key_flag(cert_file: str) -> str:
    """Chromium trusts this certificate's key, and no other untrusted one (the hub's is
    self-signed); everything else is verified as usual."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "--ignore-certificate-errors-spki-list=" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def chromium(hub):
    """Module-scoped: Playwright's sync API runs an event loop until it is closed."""
    executable = shutil.which("chromium")
    if executable is None:
        missing_prerequisite("Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_prerequisite("the playwright Python package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", trusted_key_flag(hub.ca_file)])
        yield browser
        browser.close()


@pytest.fixture
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
