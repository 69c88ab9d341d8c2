"""Prove a statistics kit right: run its validation notebooks inside its own image and compare.

`hdshub kits test <kit>` starts the kit's image hardened like a project server (read-only root,
in-memory /tmp and home, uid 1000, no capability, no network), runs every notebook of
`stats_kits/<kit>/validation/` with papermill there, and reads back the installed package
versions and the results. The comparison happens here, against
`stats_kits/<kit>/validation/reference.yaml` (published values, tolerances, sources), so the
container only computes and never sees the expected answers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .images import REPO_ROOT, read_lock

VALIDATION_DIR = "validation"
REFERENCE_FILE = "reference.yaml"
DEFAULT_RELATIVE_TOLERANCE = 1e-6
CONTAINER_VALIDATION = "/opt/hdshub/validation"
RESULT_MARKER = "HDSHUB-VALIDATION-RESULT "
RUN_TIMEOUT = 900  # seconds, for every notebook of a kit together

#: Runs inside the kit's container (python3 of the image's venv): records the installed
#: distributions, executes each notebook with papermill (outputs in /tmp), and prints one
#: JSON line after RESULT_MARKER. A failing notebook is reported, the others still run.
IN_CONTAINER_SCRIPT = f"""
import importlib.metadata, json, pathlib, sys
report = {{"installed": {{}}, "results": {{}}, "errors": {{}}}}
for dist in importlib.metadata.distributions():
    name = dist.metadata["Name"]
    if name:
        report["installed"][name] = dist.version
try:
    import papermill
except Exception as error:
    report["errors"]["papermill"] = f"cannot import papermill: {{error!r}}"
else:
    results_dir = pathlib.Path("/tmp/hdshub-validation")
    (results_dir / "executed").mkdir(parents=True)
    for notebook in sorted(pathlib.Path("{CONTAINER_VALIDATION}").glob("*.ipynb")):
        try:
            papermill.execute_notebook(
                str(notebook), str(results_dir / "executed" / notebook.name),
                parameters={{"results_dir": str(results_dir)}}, progress_bar=False,
                cwd="/tmp", kernel_name=None)
            report["results"][notebook.stem] = json.loads(
                (results_dir / f"{{notebook.stem}}.json").read_text())
        except Exception as error:
            text = str(error).strip().splitlines()
            report["errors"][notebook.stem] = (type(error).__name__ + ": "
                                               + " | ".join(text[-3:]))[:600]
print("{RESULT_MARKER}" + json.dumps(report), flush=True)
"""


class KitTestError(RuntimeError):
    """The kit could not be tested at all (no image, no Docker, bad reference file)."""


@dataclass(frozen=True)
class Reference:
    """A published value, how close a result must be, and where the value comes from."""

    check: str
    value: float
    relative: float | None
    absolute: float | None
    source: str
    why: str | None = None

    def accepts(self, result: float) -> bool:
        if self.absolute is not None:
            return abs(result - self.value) <= self.absolute
        return math.isclose(result, self.value, rel_tol=self.relative or 0.0, abs_tol=0.0)

    @property
    def tolerance_text(self) -> str:
        return f"abs {self.absolute:g}" if self.absolute is not None else f"rel {self.relative:g}"


@dataclass(frozen=True)
class CheckOutcome:
    check: str
    value: float | None
    reference: Reference
    ok: bool


@dataclass
class KitTestReport:
    kit: str
    image: str
    outcomes: list[CheckOutcome] = field(default_factory=list)
    package_problems: list[str] = field(default_factory=list)
    notebook_errors: dict[str, str] = field(default_factory=dict)
    unreferenced: list[str] = field(default_factory=list)  # computed, no reference

    @property
    def failures(self) -> list[str]:
        """Return one sentence per problem; empty when the kit is proven right."""
        problems = list(self.package_problems)
        problems += [f"notebook {name}.ipynb failed: {error}"
                     for name, error in sorted(self.notebook_errors.items())]
        for outcome in self.outcomes:
            if outcome.value is None:
                problems.append(f"{outcome.check}: not computed by any notebook")
            elif not outcome.ok:
                problems.append(
                    f"{outcome.check}: {outcome.value!r} differs from the reference "
                    f"{outcome.reference.value!r} beyond {outcome.reference.tolerance_text} "
                    f"({outcome.reference.source})")
        problems += [f"{check}: computed but has no reference in {REFERENCE_FILE}"
                     for check in self.unreferenced]
        return problems

    @property
    def ok(self) -> bool:
        return not self.failures


def validation_dir(kit: str, root: Path = REPO_ROOT) -> Path:
    return root / "stats_kits" / kit / VALIDATION_DIR


def load_references(path: Path) -> dict[str, Reference]:
    """Read reference.yaml: {checks: {<check>: {value, source, [relative|absolute, why]}}}."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KitTestError(f"{path} is missing: a kit's validation needs its reference values")
    checks = (raw or {}).get("checks")
    if not isinstance(checks, dict) or not checks:
        raise KitTestError(f"{path}: expected a mapping 'checks' of check name -> reference")
    references = {}
    for check, entry in checks.items():
        where = f"{path}: check {check!r}"
        if not isinstance(entry, dict) or "value" not in entry or not entry.get("source"):
            raise KitTestError(f"{where}: needs 'value' and 'source' (where the value is published)")
        unknown = set(entry) - {"value", "source", "relative", "absolute", "why"}
        if unknown:
            raise KitTestError(f"{where}: unknown keys {sorted(unknown)}")
        if "relative" in entry and "absolute" in entry:
            raise KitTestError(f"{where}: give 'relative' or 'absolute', not both")
        relative = float(entry.get("relative", DEFAULT_RELATIVE_TOLERANCE))
        absolute = float(entry["absolute"]) if "absolute" in entry else None
        looser = absolute is not None or relative > DEFAULT_RELATIVE_TOLERANCE
        if looser and not entry.get("why"):
            raise KitTestError(
                f"{where}: a tolerance looser than {DEFAULT_RELATIVE_TOLERANCE:g} relative "
                "needs 'why' (for example the precision the source publishes)")
        references[check] = Reference(check, float(entry["value"]), None if absolute is not None
                                      else relative, absolute, str(entry["source"]), entry.get("why"))
    return references


def compare_packages(installed: dict[str, str], lock: dict[str, str]) -> list[str]:
    """Return one sentence per locked package that is missing or at another version."""
    from packaging.utils import canonicalize_name

    present = {canonicalize_name(name): version for name, version in installed.items()}
    problems = []
    for name, version in sorted(lock.items()):
        if name not in present:
            problems.append(f"package {name} is missing from the image (the lock pins {name}=={version})")
        elif present[name] != version:
            problems.append(
                f"package {name} is {present[name]} in the image, the lock pins {name}=={version}")
    return problems


def evaluate(kit: str, image: str, container_report: dict, references: dict[str, Reference],
             lock: dict[str, str]) -> KitTestReport:
    """Compare what the container reported with the lock and the references."""
    report = KitTestReport(kit, image)
    report.package_problems = compare_packages(container_report.get("installed", {}), lock)
    report.notebook_errors = dict(container_report.get("errors", {}))
    computed: dict[str, float] = {}
    for values in container_report.get("results", {}).values():
        computed.update(values)
    for check, reference in references.items():
        value = computed.get(check)
        ok = value is not None and reference.accepts(float(value))
        report.outcomes.append(CheckOutcome(check, value, reference, ok))
    report.unreferenced = sorted(set(computed) - set(references))
    return report


def run_in_container(image: str, validation: Path, timeout: int = RUN_TIMEOUT) -> dict:
    """Run the validation notebooks in `image`, hardened like a project server; return its report."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=timeout + 60)
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise KitTestError(f"image {image} not found: build it with 'hdshub images build'") from None
    except docker.errors.DockerException as error:
        raise KitTestError(f"cannot reach the Docker Engine ({error})") from None
    container = client.containers.create(
        image,
        ["python3", "-c", IN_CONTAINER_SCRIPT],
        user="1000:1000",
        read_only=True,
        tmpfs={"/tmp": "rw,nosuid,nodev,size=256m",
               "/home/jovyan": "rw,nosuid,nodev,size=64m,uid=1000,gid=1000"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        network_mode="none",
        environment={"HOME": "/home/jovyan", "MPLBACKEND": "agg"},
        volumes={str(validation): {"bind": CONTAINER_VALIDATION, "mode": "ro"}},
        labels={"org.hdshub.kit-test": "1"},
        mem_limit="2g",
        pids_limit=512,
    )
    try:
        container.start()
        try:
            status = container.wait(timeout=timeout)
        except Exception:
            raise KitTestError(f"validation in {image} did not finish within {timeout} s") from None
        output = container.logs(stdout=True, stderr=False).decode(errors="replace")
        errors = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    for line in output.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    tail = "\n".join(errors.strip().splitlines()[-15:])
    raise KitTestError(
        f"validation in {image} printed no result (exit {status.get('StatusCode')}); "
        f"last lines:\n{tail}")


def test_kit(kit: str, image: str | None = None, root: Path = REPO_ROOT,
             runner: Callable[[str, Path], dict] = run_in_container) -> KitTestReport:
    """Run kit `kit`'s validation in `image` (default: the kit's built image) and compare."""
    from .kits import load_kits

    kits = load_kits(root / "stats_kits")
    if kit not in kits:
        raise ValueError(f"unknown kit {kit!r}: known kits are {', '.join(kits)} "
                         "('hdshub kits list')")
    folder = validation_dir(kit, root)
    references = load_references(folder / REFERENCE_FILE)
    manifest = yaml.safe_load((root / "stats_kits" / kit / "manifest.yaml").read_text())
    lock = read_lock(root / "stats_kits" / kit / manifest["requirements"])
    image = image or kits[kit].image_tag
    return evaluate(kit, image, runner(image, folder), references, lock)


test_kit.__test__ = False  # a library function, not a pytest test


def format_table(report: KitTestReport) -> str:
    """Return the checks as an aligned text table: check, value, reference, tolerance, ok."""
    rows = [("check", "value", "reference", "tolerance", "ok")]
    for outcome in report.outcomes:
        value = "-" if outcome.value is None else f"{outcome.value:.10g}"
        rows.append((outcome.check, value, f"{outcome.reference.value:.10g}",
                     outcome.reference.tolerance_text, "ok" if outcome.ok else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


def run_kit_test(kit: str, image: str | None = None, out: Callable[[str], object] = print,
                 runner: Callable[[str, Path], dict] | None = None) -> int:
    """`hdshub kits test`: print the table, then each failure; return 0 only if all is right."""
    report = test_kit(kit, image, runner=runner or run_in_container)
    out(f"kit {report.kit}, image {report.image}")
    out(format_table(report))
    failures = report.failures
    if not failures:
        out(f"{kit}: {len(report.outcomes)} checks agree with their published references")
        return 0
    for failure in failures:
        out(f"FAILED {failure}")
    raise KitTestError(f"kit {kit} failed {len(failures)} check(s): " + "; ".join(failures[:5])
                       + (" …" if len(failures) > 5 else ""))


def cross_kit_disagreements(first: dict[str, dict[str, float]], second: dict[str, dict[str, float]],
                            relative: float = DEFAULT_RELATIVE_TOLERANCE,
                            looser: dict[str, float] | None = None) -> tuple[list[str], list[str]]:
    """Compare two kits' results for the checks they share (same name: same data, same method).

    `first`, `second`: {notebook: {check: value}} as a container report's "results". Returns
    (checks compared, one sentence per disagreement beyond `relative`, or beyond the relative
    tolerance `looser` gives a check).
    """
    flat_first = {check: value for values in first.values() for check, value in values.items()}
    flat_second = {check: value for values in second.values() for check, value in values.items()}
    shared = sorted(set(flat_first) & set(flat_second))
    problems = []
    for check in shared:
        tolerance = (looser or {}).get(check, relative)
        a, b = float(flat_first[check]), float(flat_second[check])
        if not math.isclose(a, b, rel_tol=tolerance, abs_tol=0.0):
            problems.append(f"{check}: {a!r} and {b!r} differ beyond {tolerance:g} relative")
    return shared, problems
