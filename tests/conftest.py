"""Shared test rules.

Docker and browser tests skip on a machine without Docker or Chromium, except under CI=true,
where a missing prerequisite fails the run: CI must never go green by skipping.
"""

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing_prerequisite(what: str) -> None:
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"CI=true and a prerequisite is missing: {what}", pytrace=False)
    pytest.skip(f"prerequisite missing: {what}")
