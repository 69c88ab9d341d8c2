"""A real headless Chromium (Debian's), driven by Playwright; never a downloaded browser."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import missing_prerequisite
from tests.integration.conftest import docker_client, hub, new_project  # noqa: F401 (fixtures)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def chromium():
    """Module-scoped: Playwright's sync API runs an event loop until it is closed."""
    executable = shutil.which("chromium")
    if executable is None:
        missing_prerequisite("Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_prerequisite("the playwright Python package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
