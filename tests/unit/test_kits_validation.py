"""The kit validation's comparison logic and reference files, without Docker.

The real runs (notebooks in the kit's container, a deliberately broken image) are in
tests/integration/test_kits.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hdshub import kit_tests
from hdshub.images import REPO_ROOT, build_order, image_specs, kit_image_tag, read_lock, rootfs_variants
from hdshub.kit_tests import (
    KitTestError,
    compare_packages,
    cross_kit_disagreements,
    evaluate,
    format_table,
    load_references,
    run_kit_test,
    test_kit,
)
from hdshub.kits import load_kits


def write_references(tmp_path: Path, checks: dict) -> Path:
    path = tmp_path / "reference.yaml"
    path.write_text(yaml.safe_dump({"checks": checks}), encoding="utf-8")
    return path


def test_default_tolerance_is_one_in_a_million(tmp_path):
    refs = load_references(write_references(tmp_path, {"x": {"value": 2.0, "source": "NIST"}}))
    assert refs["x"].relative == 1e-6 and refs["x"].absolute is None
    assert refs["x"].accepts(2.0 + 1.9e-6)
    assert not refs["x"].accepts(2.0 + 2.1e-6)


def test_absolute_tolerance(tmp_path):
    refs = load_references(write_references(tmp_path, {
        "p": {"value": 0.07939, "absolute": 5e-6, "why": "R prints 4 digits", "source": "R"}}))
    assert refs["p"].accepts(0.0793941) and not refs["p"].accepts(0.07940)
    assert refs["p"].tolerance_text == "abs 5e-06"


@pytest.mark.parametrize("entry, message", [
    ({"value": 1.0}, "needs 'value' and 'source'"),
    ({"value": 1.0, "source": "R", "absolute": 0.1}, "needs 'why'"),
    ({"value": 1.0, "source": "R", "relative": 1e-3}, "needs 'why'"),
    ({"value": 1.0, "source": "R", "relative": 1e-3, "absolute": 1, "why": "w"}, "not both"),
    ({"value": 1.0, "source": "R", "tolerance": 1}, "unknown keys"),
])
def test_a_reference_without_source_or_reason_is_refused(tmp_path, entry, message):
    with pytest.raises(KitTestError, match=message):
        load_references(write_references(tmp_path, {"c": entry}))


def test_missing_and_wrong_packages_are_named():
    problems = compare_packages(
        {"Lifelines": "0.30.0", "scipy": "1.17.1"},
        {"lifelines": "0.30.3", "scipy": "1.17.1", "pingouin": "0.7.0"},
    )
    assert problems == [
        "package lifelines is 0.30.0 in the image, the lock pins lifelines==0.30.3",
        "package pingouin is missing from the image (the lock pins pingouin==0.7.0)",
    ]


def reference(check, value):
    return kit_tests.Reference(check, value, 1e-6, None, "a textbook")


def test_evaluate_names_every_kind_of_failure():
    references = {"a": reference("a", 1.0), "b": reference("b", 2.0), "c": reference("c", 3.0)}
    container = {
        "installed": {"numpy": "2.4.6"},
        "results": {"one": {"a": 1.0, "b": 2.5, "extra": 7.0}},
        "errors": {"two": "ModuleNotFoundError: No module named 'lifelines'"},
    }
    report = evaluate("k", "img", container, references, {"numpy": "2.4.6"})
    assert not report.ok
    failures = "\n".join(report.failures)
    assert "notebook two.ipynb failed: ModuleNotFoundError: No module named 'lifelines'" in failures
    assert "b: 2.5 differs from the reference 2.0 beyond rel 1e-06 (a textbook)" in failures
    assert "c: not computed by any notebook" in failures
    assert "extra: computed but has no reference" in failures
    assert not any(line.startswith("a:") for line in report.failures)
    table = format_table(report).splitlines()
    assert table[0].split() == ["check", "value", "reference", "tolerance", "ok"]
    assert table[1].split()[-1] == "ok" and table[2].split()[-1] == "FAIL"


def test_every_kit_reference_file_is_valid_and_cites_its_sources():
    for kit in load_kits():
        path = kit_tests.validation_dir(kit) / kit_tests.REFERENCE_FILE
        references = load_references(path)
        assert len(references) >= 10, kit
        notebooks = list(path.parent.glob("*.ipynb"))
        assert notebooks, f"{kit} has no validation notebook"
        for notebook in notebooks:  # papermill injects results_dir after the tagged cell
            cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
            tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
            assert len(tagged) == 1 and "results_dir" in "".join(tagged[0]["source"]), notebook
            assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), \
                f"{notebook} is committed with outputs"


def fake_runner(results: dict, installed: dict | None = None):
    def run(image, folder):
        return {"installed": installed or {}, "results": {"nb": results}, "errors": {}}
    return run


def python_stats_references() -> dict:
    return load_references(kit_tests.validation_dir("python-stats") / kit_tests.REFERENCE_FILE)


def test_a_kit_giving_the_published_values_passes():
    lock = read_lock(REPO_ROOT / "stats_kits/python-stats/requirements.txt")
    values = {check: ref.value for check, ref in python_stats_references().items()}
    report = test_kit("python-stats", runner=fake_runner(values, lock))
    assert report.ok, report.failures
    assert report.image == "hdshub/python-stats:latest"


def test_the_command_exits_non_zero_naming_the_failure():
    lock = read_lock(REPO_ROOT / "stats_kits/python-stats/requirements.txt")
    del lock["lifelines"]
    values = {check: ref.value for check, ref in python_stats_references().items()}
    values["welch_sleep.p_value"] = 0.08
    lines = []
    with pytest.raises(KitTestError, match="lifelines is missing") as raised:
        run_kit_test("python-stats", out=lines.append, runner=fake_runner(values, lock))
    assert "welch_sleep.p_value" in str(raised.value)
    table = "\n".join(lines).splitlines()
    assert any(line.startswith("welch_sleep.p_value") and line.endswith("FAIL") for line in table)


def test_an_unknown_kit_is_refused_as_bad_input():
    with pytest.raises(ValueError, match="unknown kit 'nope'"):
        test_kit("nope", runner=fake_runner({}))


def test_cross_kit_comparison_uses_shared_checks_only():
    python = {"means": {"welch.t": -1.8608134674868526, "only_python": 1.0}}
    r = {"means": {"welch.t": -1.86081346748685}, "other": {"or": 6.408309, "only_r": 2.0}}
    python["contingency"] = {"or": 6.408319658}
    shared, problems = cross_kit_disagreements(python, r)
    assert shared == ["or", "welch.t"]
    assert problems == ["or: 6.408319658 and 6.408309 differ beyond 1e-06 relative"]
    assert cross_kit_disagreements(python, r, looser={"or": 1e-5}) == (shared, [])


def test_r_kit_is_built_on_its_own_rootfs_variant():
    specs = image_specs()
    assert specs["r-stats"].parent == "base-r"
    assert specs["base-r"].parent == "rootfs-r" and specs["base-r"].kind == "base"
    assert dict(specs["rootfs-r"].inputs)["packages.txt"] == "images/rootfs/packages-r.txt"
    assert specs["python-stats"].parent == "base"
    assert build_order(["r-stats"], specs) == ["rootfs-r", "base-r", "r-stats"]
    assert kit_image_tag("r-stats") == "hdshub/r-stats:latest"


def packages(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")}


def test_every_rootfs_variant_has_what_the_base_image_needs():
    plain = packages(REPO_ROOT / "images/rootfs/packages.txt")
    for variant in rootfs_variants()[1:]:
        assert plain <= packages(REPO_ROOT / f"images/rootfs/packages-{variant}.txt"), variant


def test_a_kit_naming_an_unknown_rootfs_is_refused(tmp_path):
    for folder in ("images/rootfs", "stats_kits/k"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "images/rootfs/packages.txt").write_text("python3\n")
    (tmp_path / "stats_kits/k/manifest.yaml").write_text(
        "image: hdshub/k\nrequirements: requirements.txt\nrootfs: julia\n")
    with pytest.raises(ValueError, match="packages-julia.txt"):
        image_specs(tmp_path)
