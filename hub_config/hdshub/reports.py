"""Study reports: which notebook, with which parameters. Pure rules, no Docker, no hub.

A report runs either a notebook of the project's work area (`work/etude.ipynb`) or one of the
templates shipped in templates/reports/ (`descriptive`, `comparison`, `survival`). Its
parameters are checked here against the notebook's `parameters` cell before anything starts:
papermill writes the names it is given into code unescaped, so a name must be one the cell
assigns, and a value must be plain JSON (text, number, true/false, null, lists and mappings
of those) of the same kind as the cell's default.

report_runs.py starts the container, report_hub.py is the hub API, cli.py the command.
"""

from __future__ import annotations

import ast
import json
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import dashboards
from .settings import REPO_ROOT

TEMPLATES_DIR = REPO_ROOT / "templates" / "reports"
#: Roles that may run a report: running one is running code on the raw data.
RUNNER_ROLES = frozenset({"analyst", "statistician", "steward"})
MAX_PARAMETERS_BYTES = 64 * 1024
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# A syntactic R name: a letter, or a dot not followed by a digit, then letters, digits, dots
# and underscores (`min.count`, `.seuil`). papermill writes the name as given.
R_NAME = re.compile(r"(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]{0,63}")
# An R parameters cell: `name <- value` or `name = value` at the start of a line.
R_ASSIGNMENT = re.compile(r"^\s*((?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*)\s*(?:<-|=)", re.MULTILINE)
NAME_PATTERNS = {"python": IDENTIFIER, "r": R_NAME}


class ReportError(dashboards.DashboardError):
    """A refused report: `status` for HTTP, the reason in French and English."""


@dataclass(frozen=True)
class Source:
    """What to run: `label` as the user gave it, `template` or the path in work/."""

    label: str
    template: str | None = None
    work_path: str | None = None

    @property
    def stem(self) -> str:
        return self.template or Path(self.work_path).stem


def templates(root: Path = TEMPLATES_DIR) -> dict[str, Path]:
    return {path.stem: path for path in sorted(root.glob("*.ipynb"))}


def parse_source(text: str) -> Source:
    """`work/<path>.ipynb` in the project's work area, or the name of a shipped template."""
    text = (text or "").strip()
    if text in templates():
        return Source(text, template=text)
    if text.startswith("work/") or text.endswith(".ipynb"):
        try:
            return Source(text, work_path=dashboards.notebook_path(text))
        except dashboards.DashboardError as error:
            raise ReportError(error.status, error.fr, error.en) from None
    names = ", ".join(templates())
    raise ReportError(
        400, f"{text!r} n'est ni un notebook du projet (work/….ipynb) ni un modèle de rapport "
             f"({names}).",
        f"{text!r} is neither a notebook of the project (work/….ipynb) nor a report template "
        f"({names}).")


def template_kits(notebook: dict) -> list[str] | None:
    """The kits a shipped template runs on (its metadata hdshub.kits), None: any kit."""
    return (notebook.get("metadata", {}).get("hdshub") or {}).get("kits")


def notebook_language(notebook: dict) -> str:
    """The language of the notebook's kernel, lower case ("python", "r")."""
    metadata = notebook.get("metadata", {})
    return str(metadata.get("kernelspec", {}).get("language")
               or metadata.get("language_info", {}).get("name") or "python").lower()


def declared_parameters(notebook: dict) -> dict[str, object]:
    """{name: default} of the notebook's cell tagged `parameters` (papermill's convention).

    A default that is not a literal (a call, an expression) is recorded as `...`: any JSON
    value is then accepted for it. An R cell gives names only.
    """
    cell = next((c for c in notebook.get("cells", [])
                 if "parameters" in (c.get("metadata", {}).get("tags") or [])), None)
    if cell is None:
        raise ReportError(
            400, "Le notebook n'a pas de cellule marquée « parameters » : ajoutez ce tag à la "
                 "cellule qui définit ses paramètres (menu Propriétés de JupyterLab).",
            "The notebook has no cell tagged 'parameters': add that tag to the cell defining "
            "its parameters (JupyterLab's property inspector).")
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else source
    if notebook_language(notebook) != "python":  # `alpha <- 0.05` is also valid Python, with another meaning
        return {name: ... for name in R_ASSIGNMENT.findall(source)}
    try:
        tree = ast.parse(source)
    except SyntaxError:
        raise ReportError(400, "La cellule « parameters » n'est pas du Python valide.",
                          "The 'parameters' cell is not valid Python.") from None
    declared = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    declared[target.id] = ast.literal_eval(node.value)
                except (ValueError, SyntaxError, TypeError):
                    declared[target.id] = ...
    return declared


def json_problem(value, where: str) -> str | None:
    if value is None or isinstance(value, (bool, str, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where}: {value!r} is not a finite number"
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := json_problem(v, f"{where}[{i}]"))), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where}: key {key!r} is not text"
            if problem := json_problem(item, f"{where}.{key}"):
                return problem
        return None
    return f"{where}: {type(value).__name__} {value!r} is not a JSON value"


def _kind(value) -> str:
    if value is None or value is ...:
        return "any"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "text", list: "list", tuple: "list", dict: "mapping"}.get(type(value), "any")


def validate_parameters(declared: dict[str, object], given: dict, language: str = "python") -> dict:
    """The parameters to pass to papermill, or a ReportError naming every problem. A name
    must be one of the notebook's language (`language`) and declared by its cell."""
    name_pattern = NAME_PATTERNS.get(language, IDENTIFIER)
    if not isinstance(given, dict):
        raise ReportError(400, "Les paramètres doivent être un objet JSON {nom: valeur}.",
                          "Parameters must be a JSON object {name: value}.")
    problems = []
    for name, value in given.items():
        if not isinstance(name, str) or not name_pattern.fullmatch(name):
            problems.append(f"{str(name)[:40]!r} is not a parameter name")
        elif name not in declared:
            problems.append(f"unknown parameter {name!r}")
        elif problem := json_problem(value, name):
            problems.append(problem)
        elif "any" not in (_kind(declared[name]), _kind(value)) and _kind(declared[name]) != _kind(value):
            problems.append(f"{name} expects {_kind(declared[name])} (default {declared[name]!r}), "
                            f"got {_kind(value)} {value!r}")
    if not problems and len(json.dumps(given)) > MAX_PARAMETERS_BYTES:
        problems.append(f"parameters exceed {MAX_PARAMETERS_BYTES} bytes")
    if problems:
        known = ", ".join(declared) or "none"
        text = "; ".join(problems)
        raise ReportError(400, f"Paramètres refusés : {text}. Paramètres du notebook : {known}.",
                          f"Parameters refused: {text}. The notebook's parameters: {known}.")
    return dict(given)


def check_min_count(declared: dict[str, object], parameters: dict, floor: int) -> None:
    """Refuse a `min_count` (the small-count threshold of the templates, and of any notebook
    declaring it) under the disclosure policy's floor (egress.yaml, disclosure.min_count):
    a lower one would show counts that identify people."""
    if "min_count" not in declared or "min_count" not in parameters:
        return
    value = parameters["min_count"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < floor:
        raise ReportError(
            400, f"Paramètre min_count refusé : {value!r}. Les effectifs de 1 à min_count - 1 sont "
                 f"masqués, et la politique de diffusion du hub impose un seuil d'au moins {floor} "
                 f"(effectifs de moins de {floor} personnes jamais montrés) : donnez un entier "
                 f">= {floor}, ou omettez-le.",
            f"Parameter min_count refused: {value!r}. Counts from 1 to min_count - 1 are hidden, and "
            f"the hub's disclosure policy sets a threshold of at least {floor} (counts under {floor} "
            f"people are never shown): give a whole number >= {floor}, or leave it out.")


def run_name(source: Source, at: datetime | None = None) -> str:
    """<stem>-<UTC date and time>-<4 hex>: sortable, unique, safe as a folder name."""
    at = at or datetime.now(timezone.utc)
    stem = re.sub(r"[^a-z0-9-]+", "-", source.stem.lower()).strip("-")[:40] or "report"
    return f"{stem}-{at:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


RUN_NAME = re.compile(r"[a-z0-9-]{1,80}")


def title_of(notebook: dict, source: Source, language: str) -> str:
    """The template's title in the report's language, else the notebook's, else its name."""
    titles = (notebook.get("metadata", {}).get("hdshub") or {}).get("title") or {}
    title = titles.get(language) or titles.get("fr") or notebook.get("metadata", {}).get("title") or ""
    return str(title).strip()[:200] or source.stem
