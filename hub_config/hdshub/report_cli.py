"""`hdshub report run|list`: through the hub's reports API (report_hub.py), which does the work.

The command reads the parameters (a YAML file, then -p pairs), asks the hub to start the run,
then follows it: one line per cell on standard error while it runs, the outputs at the end,
or the failing cell and where the partial notebook is. Exit 0 when the report is done, 1 when
it failed, 2 when it was refused before starting.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from pathlib import Path
from urllib.parse import quote

import yaml

from . import naming, reports

POLL_SECONDS = 1.0


def parameter_value(text: str):
    """-p VALUE: JSON when it parses as JSON (numbers, true/false/null, lists, mappings,
    quoted text), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_parameters(file: Path | None, pairs: list[list[str]]) -> dict:
    parameters = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except OSError as error:
            raise ValueError(f"-f {file}: cannot read it ({error.strerror})") from None
        except yaml.YAMLError as error:
            raise ValueError(f"-f {file}: not valid YAML ({error})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"-f {file}: expected a mapping of parameter names to values, "
                             f"got {type(loaded).__name__}")
        parameters.update(loaded or {})
    for name, value in pairs:
        parameters[name] = parameter_value(value)
    for name, value in parameters.items():  # YAML also has dates, sets...: refused here already
        if problem := reports.json_problem(value, str(name)):
            raise ValueError(f"parameter {problem}; give text, numbers, true/false, null, lists "
                             "or mappings")
    return parameters


def describe_error(run: dict) -> str:
    error = run.get("error") or {}
    where = f"{run['folder']}/{run['run']}.ipynb"
    if error.get("stage") == "execute":
        return (f"report {run['run']} failed at cell {error.get('cell')} ({error.get('source', '')!r}): "
                f"{error.get('ename')}: {error.get('evalue')}; the partial notebook is {where}")
    if error.get("stage") == "render":
        return (f"report {run['run']} ran, but its HTML/PDF could not be made ({error.get('ename')}: "
                f"{error.get('evalue')}); the executed notebook is {where}")
    return f"report {run['run']} failed: {error.get('en', error)}" + "".join(
        f"\n  {line}" for line in error.get("log", []))


def run_report_command(args, connect, out=print, err=None) -> int:
    err = err or (lambda text: print(text, file=sys.stderr, flush=True))
    naming.validate_slug(args.slug)
    path = f"/hdshub/reports/{quote(args.slug)}"
    if args.action == "list":
        for run in connect().request("GET", path)["runs"]:
            progress = f"{run['cell']}/{run['cells']}" if run["status"] == "running" else ""
            out(f"{run['run']:44} {run['status']:8} {progress:7} {run['source']:24} {run['requested_by']}")
        return 0
    parameters = read_parameters(args.parameters_file, args.parameter)
    api = connect()
    run = api.request("POST", path, json={"notebook": args.notebook, "parameters": parameters,
                                          "by": args.by or getpass.getuser()})
    err(f"report {run['run']} started ({run['source']}, kit of project {args.slug})")
    shown = None
    while run["status"] in ("starting", "running"):
        time.sleep(POLL_SECONDS)
        run = api.request("GET", f"{path}/{quote(run['run'])}")
        if run["cell"] and run["cell"] != shown:
            shown = run["cell"]
            err(f"  cell {run['cell']}/{run['cells']}  {run['current']}")
    if run["status"] != "ok":
        raise ReportFailed(describe_error(run))
    out(f"report {run['run']} done in {run['finished_at'] - run['started_at']:.1f} s: {run['folder']}/")
    for output in run["outputs"]:
        out(f"  {output['file']:48} {output['size']:>10} bytes  sha256 {output['sha256']}")
    return 0


class ReportFailed(RuntimeError):
    """The run happened and failed: exit 1 with the failing cell (cli.report)."""
