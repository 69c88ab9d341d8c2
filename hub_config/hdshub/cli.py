"""The `hdshub` command: run the hub, build images, manage projects, members and data."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
from datetime import date
from pathlib import Path

from .state import StateDir

EXIT_REFUSED = 2  # bad input: nothing was changed
EXIT_FAILED = 1   # something broke while doing it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hdshub",
        description="A hardened JupyterHub for health-data research.",
    )
    parser.add_argument(
        "--state-dir", type=Path,
        help="state directory of the hub (default: $HDSHUB_STATE_DIR or ./var/state)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run the hub on embedded defaults (foreground)")
    up.add_argument("--bind-url", default="https://127.0.0.1:8000",
                    help="public https URL the proxy listens on (default: %(default)s)")
    up.add_argument("--tls-cert", type=Path,
                    help="PEM certificate chain for the bind URL's host (default: a generated "
                    "self-signed one in the state directory)")
    up.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert (mode 600)")
    up.add_argument("--hub-port", type=int, default=8081, help="hub API port (default: %(default)s)")
    up.add_argument("--proxy-api-port", type=int, default=8001,
                    help="proxy API port on 127.0.0.1 (default: %(default)s)")
    up.add_argument("--admin", default="admin", help="administrator's username (default: %(default)s)")
    up.add_argument("--no-build", action="store_true", help="do not build missing images")
    up.add_argument("--no-demo", action="store_true", help="do not create the demo project")

    commands.add_parser("doctor", help="check a running deployment's hardening (file modes, TLS, "
                        "headers, proxy API, firewall, project containers); exit 1 if anything is wrong")

    images = commands.add_parser("images", help="container images").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    build = images.add_parser("build", help="build images in dependency order, skipping up-to-date ones")
    build.add_argument("--kit", action="append", help="build this kit (and its parents) only; repeatable")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")

    kits = commands.add_parser("kits", help="statistics kits").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    kits.add_parser("list", help="list the kits")
    kit_test = kits.add_parser("test", help="run a kit's validation notebooks in its image and "
                               "compare with published values; exit 1 naming what failed")
    kit_test.add_argument("kit", help="a kit from 'hdshub kits list'")
    kit_test.add_argument("--image", help="image to test (default: the kit's built image)")

    project = commands.add_parser("project", help="projects").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    create = project.add_parser("create", help="create a project")
    create.add_argument("slug", help="1-30 characters a-z, 0-9, '-'")
    create.add_argument("--tier", required=True, help="public, private, or a custom tier")
    create.add_argument("--kit", required=True, help="a kit from 'hdshub kits list'")
    create.add_argument("--title", required=True, help="title shown to members")
    member = project.add_parser("add-member", help="give a user a role in a project")
    member.add_argument("slug")
    member.add_argument("user")
    member.add_argument("--role", required=True,
                        choices=["analyst", "statistician", "clinician", "checker", "steward"])
    project.add_parser("list", help="list projects and their members")

    data = commands.add_parser("data", help="raw data").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    imp = data.add_parser("import", help="import a file into a project's read-only data (the only way in)")
    imp.add_argument("slug")
    imp.add_argument("file", type=Path)

    dashboard = commands.add_parser("dashboard", help="clinicians' dashboards (Voilà)").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    publish = dashboard.add_parser("publish", help="publish a notebook of the project's work area as a "
                                   "read-only, versioned dashboard (restarts its dashboard server)")
    publish.add_argument("slug")
    publish.add_argument("notebook", help="path in the project's work area, e.g. work/survie.ipynb")
    publish.add_argument("--title", help="title shown to viewers (default: the notebook's)")
    publish.add_argument("--name", help="dashboard name, a-z 0-9 '-' (default: from the file name); "
                         "publishing under an existing name makes a new version")
    dashboard.add_parser("list", help="a project's published dashboards").add_argument("slug")
    withdraw = dashboard.add_parser("withdraw", help="stop serving a dashboard (its versions stay on record)")
    withdraw.add_argument("slug")
    withdraw.add_argument("name")

    report = commands.add_parser("report", help="study reports (papermill) run in a one-off container of "
                                 "the project's kit").add_subparsers(dest="action", required=True, metavar="ACTION")
    report_run = report.add_parser(
        "run", help="run a notebook of the work area, or a shipped template, with parameters; the "
        "executed notebook, HTML, PDF and provenance.json land in outputs/reports/<run>/")
    report_run.add_argument("slug")
    report_run.add_argument("notebook", help="work/<path>.ipynb, or a template: descriptive, comparison, survival")
    report_run.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                            metavar=("NAME", "VALUE"),
                            help="a parameter; VALUE is read as JSON when it is JSON (10, true, "
                            "[\"a\"]), as text otherwise; repeatable, wins over -f")
    report_run.add_argument("-f", "--parameters-file", type=Path, metavar="YAML",
                            help="a YAML mapping of parameters")
    report_run.add_argument("--by", default=None, help="who asks for the run (default: your login name)")
    report.add_parser("list", help="the runs the hub started for a project").add_argument("slug")

    audit = commands.add_parser("audit", help="the tamper-evident audit trail (read on the hub host, "
                                "as root)").add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = audit.add_parser("verify", help="check a project's hash chain; exit 1 naming the first bad line")
    verify.add_argument("project", help="a project slug, or _hub for logins and logouts")
    export = audit.add_parser("export", help="a project's events between two dates (inclusive, UTC), "
                              "for a data protection officer")
    export.add_argument("project", help="a project slug, or _hub for logins and logouts")
    export.add_argument("--from", dest="start", required=True, type=iso_date, metavar="YYYY-MM-DD")
    export.add_argument("--to", dest="end", required=True, type=iso_date, metavar="YYYY-MM-DD")
    export.add_argument("--format", choices=["csv", "json"], default="csv", help="(default: %(default)s)")
    export.add_argument("--output", type=Path, help="file to write, mode 600 (default: standard output)")

    usage = commands.add_parser("usage", help="what projects used, for invoicing").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    usage_report = usage.add_parser("report", help="a month's usage per project against its tier: "
                                    "usage-YYYY-MM.csv and .html")
    usage_report.add_argument("--month", required=True, metavar="YYYY-MM")
    usage_report.add_argument("--output", type=Path, default=Path("."),
                              help="folder to write into (default: the current folder)")

    user = commands.add_parser("user", help="local accounts").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    add = user.add_parser("add", help="create a local account (or reset its password)")
    add.add_argument("username")
    add.add_argument("--admin", action="store_true", help="make the user a hub administrator")
    add.add_argument("--json", action="store_true", help="print {username, password} as JSON")
    return parser


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a date such as 2026-01-31") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.state_dir:
        os.environ["HDSHUB_STATE_DIR"] = str(args.state_dir.resolve())
    state = StateDir.from_env()
    try:
        return run(args, state)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # every refusal or failure ends as one clear line
        return report(error)


def report(error: Exception) -> int:
    """One clear line instead of a traceback; HDSHUB_DEBUG=1 shows the traceback."""
    from .hub_api import HubAPIError

    if os.environ.get("HDSHUB_DEBUG"):
        raise error
    print(f"hdshub: {error}", file=sys.stderr)
    if isinstance(error, HubAPIError):
        return EXIT_REFUSED if 400 <= error.status < 500 else EXIT_FAILED
    # ValueError covers every refusal of bad input: names, config keys, commands.
    return EXIT_REFUSED if isinstance(error, ValueError) else EXIT_FAILED


def run(args, state: StateDir) -> int:
    if args.command == "up":
        from .up import public_url_checked, up

        return up(
            state, public_url_checked(args.bind_url), args.hub_port, args.proxy_api_port,
            args.admin, build=not args.no_build, with_demo=not args.no_demo,
            tls_cert=args.tls_cert, tls_key=args.tls_key,
        )
    if args.command == "doctor":
        from .doctor import doctor

        return doctor(state)
    if args.command == "images":
        from .images import build_images

        for result in build_images(args.kit, force=args.force, progress=print):
            print(f"{result.name:16} {result.status:11} {result.tag}")
        return 0
    if args.command == "audit":
        return run_audit(args, state)
    if args.command == "kits" and args.action == "test":
        from .kit_tests import run_kit_test

        return run_kit_test(args.kit, args.image)
    if args.command == "kits":
        from .kits import load_kits

        for kit in load_kits().values():
            print(f"{kit.name:16} {kit.image_tag:32} {kit.title['fr']} / {kit.title['en']}")
        return 0

    from .hub_api import HubAPI

    from . import naming

    connect = lambda: HubAPI.from_state(state)  # noqa: E731 (reach the hub only when needed)
    if args.command == "project":
        return run_project(args, connect)
    if args.command == "dashboard":
        return run_dashboard(args, connect)
    if args.command == "usage":
        return run_usage(args, state, connect)
    if args.command == "report":
        from .report_cli import run_report_command

        return run_report_command(args, connect)
    if args.command == "data":
        import docker

        from .manage import import_data

        naming.validate_slug(args.slug)
        dataset = import_data(connect(), docker.from_env(), args.slug, args.file, by=getpass.getuser())
        print(f"imported {dataset['name']} into {args.slug} "
              f"({dataset['size']} bytes, sha256 {dataset['sha256']})")
        return 0
    if args.command == "user":
        from .accounts import add_local_account

        naming.validate_username(args.username)
        password = add_local_account(connect(), state, args.username, admin=args.admin)
        if args.json:
            print(json.dumps({"username": args.username, "password": password}))
        else:
            print(f"account {args.username}: password (shown once) {password}")
        return 0
    raise AssertionError(args.command)


def run_project(args, connect) -> int:
    """connect() reaches the hub only after the arguments were checked locally."""
    from . import manage, naming
    from .kits import load_kits
    from .settings import site_file
    from .tiers import load_tiers

    if args.action == "create":
        naming.validate_slug(args.slug)
        config_dir = os.environ.get("HDSHUB_CONFIG_DIR")
        tiers = load_tiers(site_file(Path(config_dir) if config_dir else None, "tiers.yaml"))
        project = manage.check_new_project(
            tiers, load_kits(), args.slug, args.tier, args.kit, args.title
        )
        manage.create_project(connect(), project)
        print(f"created project {project.slug} (tier {project.tier}, kit {project.kit})")
    elif args.action == "add-member":
        naming.validate_slug(args.slug)
        naming.validate_username(args.user)
        manage.add_member(connect(), args.slug, args.user, args.role)
        print(f"{args.user} is now {args.role} in {args.slug}")
    elif args.action == "list":
        for project, members in manage.list_projects(connect()):
            print(f"{project.slug:30} {project.tier:10} {project.kit:14} {project.title}")
            for role, users in sorted(members.items()):
                print(f"    {role:13} {', '.join(users)}")
    return 0


def run_dashboard(args, connect) -> int:
    """Through the hub's dashboards API (dashboard_hub.py), which does the work."""
    from urllib.parse import quote

    from . import dashboards, naming

    naming.validate_slug(args.slug)
    path = f"/hdshub/dashboards/{quote(args.slug)}"
    if args.action == "publish":
        body = {"notebook": dashboards.notebook_path(args.notebook), "by": getpass.getuser()}
        if args.name:
            body["name"] = dashboards.validate_name(args.name)
        if args.title:
            body["title"] = args.title
    elif args.action == "withdraw":
        path += f"/{quote(dashboards.validate_name(args.name))}"
    api = connect()
    api.timeout = 180  # publishing and withdrawing restart the dashboard server
    if args.action == "publish":
        reply = api.request("POST", path, json=body)
        print(f"published {args.slug}/{reply['name']} version {reply['version']} "
              f"(sha256 {reply['sha256']}); dashboard server {reply['server']}")
    elif args.action == "list":
        for d in api.request("GET", path)["dashboards"]:
            print(f"{d['name']:30} v{d['version']:<4} {d['published_at']}  {d['published_by']:20} "
                  f"{d['sha256'][:16]}  {d['title']}")
    elif args.action == "withdraw":
        reply = api.request("DELETE", path)
        print(f"withdrew {args.slug}/{args.name}; dashboard server {reply['server']}")
    return 0


def run_usage(args, state: StateDir, connect) -> int:
    from .audit_log import AuditTrail
    from .projects import Project
    from .settings import site_file
    from .tiers import load_tiers
    from .usage import UsageStore
    from .usage_report import monthly, parse_month, write

    month = parse_month(args.month)  # refused before the hub is asked anything
    if not state.usage_db.exists():
        raise RuntimeError(f"no usage recorded yet in {state.usage_db}: is the hub running ('hdshub up')?")
    config_dir = Path(os.environ["HDSHUB_CONFIG_DIR"]) if os.environ.get("HDSHUB_CONFIG_DIR") else None
    projects = {}
    for group in connect().groups():
        project = Project.from_group(group["name"], group.get("properties") or {})
        if project is not None:
            projects[project.slug] = project.tier
    rows = monthly(UsageStore(state.usage_db), AuditTrail(state.audit_dir), projects,
                   load_tiers(site_file(config_dir, "tiers.yaml")), month)
    csv_path, html_path = write(rows, month, args.output)
    print(f"usage of {len(rows)} project(s) in {month}: {csv_path}, {html_path}")
    return 0


def run_audit(args, state: StateDir) -> int:
    """Read the trail straight from the state directory, as the hub host's root does."""
    from .audit_log import AuditTrail, stream_name

    trail = AuditTrail(state.audit_dir)
    stream_name(args.project)  # bad arguments are refused before any file is read
    if args.action == "export" and args.start > args.end:
        raise ValueError(f"--from {args.start} is after --to {args.end}")
    if not trail.exists(args.project):
        print(f"hdshub: no audit trail for {args.project} in {state.audit_dir}: nothing was "
              "recorded yet, or its files were removed", file=sys.stderr)
        return EXIT_FAILED
    verdict = trail.verify(args.project)
    if args.action == "verify":
        print(verdict if verdict.intact else f"{args.project}: {verdict}",
              file=sys.stdout if verdict.intact else sys.stderr)
        return 0 if verdict.intact else EXIT_FAILED
    with private_output(args.output) as out:
        count = trail.export(args.project, args.start, args.end, args.format, out)
    print(f"exported {count} events of {args.project} ({args.start} to {args.end})"
          + (f" to {args.output}" if args.output else ""), file=sys.stderr)
    if not verdict.intact:
        print(f"hdshub: warning: the trail of {args.project} is not intact, {verdict}; the "
              "export may hold altered events", file=sys.stderr)
        return EXIT_FAILED
    return 0


@contextlib.contextmanager
def private_output(path: Path | None):
    """Standard output, or a file only its owner can read: an export holds personal data."""
    if path is None:
        yield sys.stdout
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        yield f


if __name__ == "__main__":
    sys.exit(main())
