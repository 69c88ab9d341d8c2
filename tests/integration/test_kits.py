"""Kits proven right in their own containers, and a broken kit caught by name (real Docker)."""

from __future__ import annotations

import io
import secrets

import pytest
import yaml

from hdshub.images import REPO_ROOT, read_lock
from hdshub.kit_tests import (
    REFERENCE_FILE,
    KitTestError,
    cross_kit_disagreements,
    evaluate,
    load_references,
    run_in_container,
    run_kit_test,
    validation_dir,
)
from hdshub.kits import load_kits

pytestmark = pytest.mark.docker

SITE_PACKAGES = "/opt/hdshub/venv/lib/python3.11/site-packages"


#: Checks both kits compute with a method that differs, and by how much they may differ.
CROSS_KIT_LOOSER = {
    # R's fisher.test solves for the conditional MLE with uniroot at tolerance ~1.2e-4;
    # scipy solves the same equation to machine precision (see reference.yaml).
    "fisher_tea.conditional_odds_ratio": 1e-5,
}


@pytest.fixture(scope="module")
def container_reports(docker_client):
    """Each kit's validation, run once in its own hardened container: {kit: report}."""
    return {kit: run_in_container(load_kits()[kit].image_tag, validation_dir(kit))
            for kit in sorted(load_kits())}


@pytest.mark.parametrize("kit", sorted(load_kits()))
def test_kit_agrees_with_published_references(container_reports, kit):
    references = load_references(validation_dir(kit) / REFERENCE_FILE)
    manifest = yaml.safe_load((REPO_ROOT / "stats_kits" / kit / "manifest.yaml").read_text())
    lock = read_lock(REPO_ROOT / "stats_kits" / kit / manifest["requirements"])
    report = evaluate(kit, load_kits()[kit].image_tag, container_reports[kit], references, lock)
    assert report.ok, "\n".join(report.failures)
    assert len(report.outcomes) >= 30


def test_python_and_r_kits_compute_the_same_numbers(container_reports):
    """Same data, same test variants (Welch, continuity-corrected Mann-Whitney with ties, Efron
    ties, full convergence): the kits agree to 1e-8 relative (observed: 1.3e-10 at most)."""
    shared, problems = cross_kit_disagreements(
        container_reports["python-stats"]["results"], container_reports["r-stats"]["results"],
        relative=1e-8, looser=CROSS_KIT_LOOSER)
    assert not problems, "\n".join(problems)
    # every family of analysis is compared, not only the easy ones
    for family in ("chisq_", "fisher_", "welch_", "student_", "mannwhitney_", "ols_longley",
                   "logit_spector", "km_lung", "logrank_", "cox_lung"):
        assert any(check.startswith(family) for check in shared), family
    assert len(shared) >= 60


@pytest.fixture
def broken_python_stats(docker_client):
    """python-stats with lifelines uninstalled and pingouin claiming another version."""
    lock = read_lock(REPO_ROOT / "stats_kits/python-stats/requirements.txt")
    pingouin = lock["pingouin"]
    dockerfile = f"""
FROM hdshub/python-stats:latest
USER root
RUN /opt/hdshub/venv/bin/pip uninstall --yes --disable-pip-version-check lifelines \\
 && sed -i 's/^Version: {pingouin}$/Version: 0.0.1/' {SITE_PACKAGES}/pingouin-{pingouin}.dist-info/METADATA
USER 1000
"""
    tag = f"hdshub-test/broken-python-stats:{secrets.token_hex(3)}"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True,
                               forcerm=True, pull=False)
    yield tag
    docker_client.images.remove(tag, force=True)


def test_a_broken_kit_fails_naming_the_package(broken_python_stats):
    lines: list[str] = []
    with pytest.raises(KitTestError) as raised:
        run_kit_test("python-stats", broken_python_stats, out=lines.append)
    message = str(raised.value)
    assert "package lifelines is missing from the image" in message
    assert "package pingouin is 0.0.1 in the image, the lock pins pingouin==" in message
    output = "\n".join(lines)
    assert "notebook survival.ipynb failed" in output and "lifelines" in output
    assert "km_lung.median.male: not computed" in output
    # what does not need lifelines still agrees
    assert any(line.startswith("ols_longley.coef.YEAR") and line.endswith(" ok")
               for line in output.splitlines())
