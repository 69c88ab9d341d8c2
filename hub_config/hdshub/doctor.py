"""`hdshub doctor`: check a running deployment's hardening, say what is wrong and how to fix it.

It looks from the outside, as an auditor would: the state directory's modes, TLS on the public
URL (certificate, protocols, cipher suites), the headers of hub pages, the proxy API, the host
firewall, and every running project container and network through `docker inspect`, against
the same expectations as the integration tests (hardening.py). Exit 1 if anything is wrong.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import stat
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import requests

from . import firewall, hardening, internal_tls, naming, tls
from .project_resources import LABEL_PROJECT
from .state import StateDir

SECRET_FILES = ("proxy-auth-token.secret", "cli-api-token.secret", "auth-state-crypt-key.secret",
                "jupyterhub_cookie_secret")


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""


def ok(what: str) -> Finding:
    return Finding(True, what)


def problem(what: str, fix: str) -> Finding:
    return Finding(False, what, fix)


# -- the state directory ------------------------------------------------------------------


def check_state(state: StateDir, runtime: dict) -> list[Finding]:
    found = []
    for directory, _dirs, files in os.walk(state.path):
        mode = stat.S_IMODE(os.stat(directory).st_mode)
        if Path(directory).is_relative_to(state.policies_dir):
            # Policies are read by project containers (mounted read-only), so readable by
            # all; the private state directory above keeps host users out. Never writable.
            found.extend(_check_policy_files(directory, mode, files))
            continue
        # A server's own certificate folder belongs to the containers' user, who reads it.
        owner = (internal_tls.SERVER_UID if Path(directory).parent == state.server_certs_dir
                 else os.geteuid())
        if mode & 0o077:
            found.append(problem(f"{directory} has mode {mode:o}: others can list or enter it",
                                 f"chmod 700 {directory}"))
        if Path(directory).name == "logs":
            continue
        for name in files:
            path = Path(directory, name)
            info = path.lstat()
            if stat.S_IMODE(info.st_mode) & 0o077:
                found.append(problem(f"{path} has mode {stat.S_IMODE(info.st_mode):o}: others can read it",
                                     f"chmod 600 {path}"))
            if info.st_uid != owner:
                found.append(problem(f"{path} belongs to uid {info.st_uid}, not {owner}",
                                     f"chown {owner} {path}"))
    for name in SECRET_FILES:
        if not (state.path / name).exists():
            found.append(problem(f"{state.path / name} is missing", "restart the hub with 'hdshub up'"))
    key = Path(runtime["tls_key"])
    if not key.is_relative_to(state.path):  # a site key lives elsewhere: check it too
        mode = stat.S_IMODE(key.stat().st_mode)
        if mode & 0o077:
            found.append(problem(f"TLS key {key} has mode {mode:o}: others can read it", f"chmod 600 {key}"))
    if not found:
        found.append(ok(f"state directory {state.path}: private (700/600), secrets present"))
    return found


def _check_policy_files(directory: str, mode: int, files: list[str]) -> list[Finding]:
    found = []
    for path, path_mode in [(directory, mode), *((os.path.join(directory, f),
                            stat.S_IMODE(os.lstat(os.path.join(directory, f)).st_mode)) for f in files)]:
        if path_mode & 0o022:
            found.append(problem(f"{path} has mode {path_mode:o}: others can change a project's policy",
                                 f"chmod go-w {path}"))
    return found


# -- TLS and headers of the public URL -----------------------------------------------------


def check_tls(public_url: str, runtime: dict, state: StateDir) -> list[Finding]:
    url = urlparse(public_url)
    host, port = url.hostname, url.port or 443
    try:
        cert = tls.served_certificate(host, port)
    except OSError as error:
        return [problem(f"no TLS answer at {host}:{port} ({error})",
                        "start the hub ('hdshub up'), or check --bind-url")]
    found = []
    where = f"the certificate served at {host}:{port}"
    for what in tls.certificate_problems(cert, host, where):
        found.append(problem(what, "renew it (a generated one is renewed by restarting 'hdshub up'; "
                                   "give a site one with --tls-cert/--tls-key)"))
    generated = Path(runtime["tls_cert"]).is_relative_to(state.tls_dir)
    context = ssl.create_default_context()
    try:
        with socket.create_connection((host, port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=host):
            found.append(ok(f"{where} is trusted by this host's CA store"))
    except ssl.SSLCertVerificationError as error:
        if generated:
            found.append(ok(f"{where} is the generated self-signed one (fine for a test host; "
                            "a production host needs a CA-issued certificate: --tls-cert/--tls-key)"))
        else:
            found.append(problem(f"{where} is not trusted: {error.verify_message}",
                                 "give the full chain (leaf first) in --tls-cert"))
    for version in ("TLSv1", "TLSv1_1"):
        if not tls.handshake(host, port, version).startswith("refused"):
            found.append(problem(f"{host}:{port} accepts {version.replace('_', '.')}",
                                 f"run the proxy with NODE_OPTIONS={tls.NODE_TLS_OPTIONS} (hdshub.configurer does)"))
    if tls.handshake(host, port, "TLSv1_2") != "TLSv1.2":
        found.append(problem(f"{host}:{port} refuses TLS 1.2", "check the proxy's --ssl-ciphers"))
    for suite in ("AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA"):
        if not tls.handshake(host, port, "TLSv1_2", f"{suite}:@SECLEVEL=0").startswith("refused"):
            found.append(problem(f"{host}:{port} accepts the weak suite {suite}",
                                 f"give the proxy --ssl-ciphers {tls.CIPHERS}"))
    if all(f.ok for f in found):
        found.append(ok(f"{host}:{port}: TLS 1.2 and 1.3 only, forward-secret AEAD suites"))
    return found


def check_headers(public_url: str, runtime: dict, state: StateDir) -> list[Finding]:
    verify = runtime["tls_cert"] if Path(runtime["tls_cert"]).is_relative_to(state.tls_dir) else True
    session = requests.Session()
    session.trust_env = False
    try:
        reply = session.get(public_url.rstrip("/") + "/hub/login", timeout=10, verify=verify)
    except requests.RequestException as error:
        return [problem(f"{public_url}/hub/login does not answer ({error})", "start the hub ('hdshub up')")]
    found = []
    fix = "apply hdshub.configurer's settings (no site override of tornado_settings['headers'])"
    hsts = reply.headers.get("Strict-Transport-Security", "")
    try:
        max_age = int(hsts.split("max-age=")[1].split(";")[0])
    except (IndexError, ValueError):
        max_age = 0
    if max_age < 180 * 24 * 3600:
        found.append(problem(f"hub pages send no lasting HSTS (got {hsts!r})", fix))
    csp = {d.strip().split(None, 1)[0]: d.strip() for d in reply.headers.get("Content-Security-Policy", "").split(";") if d.strip()}
    if csp.get("frame-ancestors") != "frame-ancestors 'none'":
        found.append(problem("hub pages may be framed (no CSP frame-ancestors 'none')", fix))
    if reply.headers.get("X-Content-Type-Options") != "nosniff":
        found.append(problem("hub pages lack X-Content-Type-Options: nosniff", fix))
    insecure = [c for c in reply.raw.headers.getlist("Set-Cookie") if "; secure" not in c.lower()]
    if insecure:
        found.append(problem(f"hub cookies without Secure: {[c.split('=')[0] for c in insecure]}",
                             "set tornado_settings['cookie_options'] = {'secure': True} (hdshub.configurer does)"))
    if not found:
        found.append(ok("hub pages: HSTS, CSP frame-ancestors 'none', nosniff, Secure cookies"))
    return found


# -- proxy API and firewall ---------------------------------------------------------------


def check_proxy_api(state: StateDir, runtime: dict) -> list[Finding]:
    port = int(runtime["proxy_api_port"])
    found = []
    session = internal_tls.client_session(state.internal_certs_dir)
    try:
        status = session.get(f"https://127.0.0.1:{port}/api/routes", timeout=5).status_code
    except requests.RequestException as error:
        return [problem(f"no proxy API on 127.0.0.1:{port} ({error})", "start the hub ('hdshub up')")]
    if status != 403:
        found.append(problem(f"the proxy API answers {status} without a token", "restart the hub ('hdshub up')"))
    with socket.socket() as probe:
        probe.settimeout(3)
        if probe.connect_ex((runtime["hub_ip"], port)) == 0:
            found.append(problem(f"the proxy API also listens on {runtime['hub_ip']}:{port}, which project "
                                 "networks face", "keep ConfigurableHTTPProxy.api_url on 127.0.0.1"))
    if not found:
        found.append(ok(f"proxy API: 127.0.0.1:{port} only, token required"))
    return found


def check_internal_tls(state: StateDir, runtime: dict) -> list[Finding]:
    """The hub API, which project networks face, must refuse a client with no internal
    certificate and answer one with the hub's."""
    api = f"https://{runtime['hub_ip']}:{runtime['hub_port']}/hub/api/"
    fix = "restart the hub with 'hdshub up' (it turns internal TLS on)"
    stranger = requests.Session()
    stranger.trust_env = False
    stranger.verify = False  # the certificate check is the next probe's; here, ours is missing
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            status = stranger.get(api, timeout=5).status_code
        return [problem(f"the hub API at {api} answers {status} to a client without a certificate", fix)]
    except requests.RequestException:
        pass
    try:
        internal_tls.client_session(state.internal_certs_dir).get(api, timeout=5).raise_for_status()
    except (requests.RequestException, OSError) as error:
        return [problem(f"the hub API at {api} refuses the hub's own internal certificate ({error})", fix)]
    return [ok(f"hub API {runtime['hub_ip']}:{runtime['hub_port']}: internal TLS, client certificate required")]


def check_firewall(runtime: dict) -> list[Finding]:
    iptables = shutil.which("iptables")
    fix = "restart 'hdshub up' as root, or apply ansible/roles/firewall"
    if iptables is None:
        return [problem("iptables is missing: nothing keeps kernels off the host", "apt-get install iptables")]
    rules = [["INPUT", "-i", firewall.BRIDGES, "-j", firewall.CHAIN],
             [firewall.CHAIN, "-p", "tcp", "-d", runtime["hub_ip"], "--dport", str(runtime["hub_port"]), "-j", "ACCEPT"]]
    for rule in rules:
        if subprocess.run([iptables, "-w", "-C", *rule], capture_output=True).returncode != 0:
            return [problem(f"host firewall rule missing: iptables -C {' '.join(rule)}", fix)]
    return [ok(f"host firewall: chain {firewall.CHAIN} guards every hds-* bridge")]


# -- project containers -------------------------------------------------------------------


def check_containers(state: StateDir) -> list[Finding]:
    import docker
    import docker.errors

    from .hub_api import HubAPI, HubAPIError
    from .projects import Project
    from .settings import site_file
    from .tiers import load_tiers

    try:
        client = docker.from_env()
        containers = client.containers.list(filters={"label": LABEL_PROJECT})
    except docker.errors.DockerException as error:
        return [problem(f"cannot inspect containers ({error})", "run 'hdshub doctor' as root on the hub host")]
    config_dir = os.environ.get("HDSHUB_CONFIG_DIR")
    tiers = load_tiers(site_file(Path(config_dir) if config_dir else None, "tiers.yaml"))
    api = HubAPI.from_state(state)
    secrets = {name: (state.path / name).read_text().strip()
               for name in SECRET_FILES if (state.path / name).exists()}
    found, networks, foreign = [], set(), []
    for container in containers:
        slug = container.labels[LABEL_PROJECT]
        try:
            group = api.get_group(slug)
        except HubAPIError as error:
            return found + [problem(f"cannot ask the hub about project {slug} ({error})",
                                    "start the hub ('hdshub up')")]
        project = Project.from_group(slug, group["properties"]) if group else None
        if project is None:
            foreign.append(container.name)  # another hub's on this Docker Engine, or a deleted project
            continue
        limits = tiers[project.tier].limits if project.tier in tiers else None
        issues = hardening.container_problems(container.attrs, slug, limits)
        issues += hardening.leaked_secrets(container.attrs, secrets)
        found += [problem(issue, f"stop it (docker stop {container.name}); servers started by the hub "
                                 "are hardened, so find out who started this one") for issue in issues]
        if not issues:
            found.append(ok(f"container {container.name}: hardened, tier limits applied"))
        if container.attrs["HostConfig"].get("NetworkMode") != "none":  # report runs have none
            networks.add(naming.network_name(slug))
    for name in sorted(networks):
        try:
            issues = hardening.network_problems(client.networks.get(name).attrs)
        except docker.errors.NotFound:
            continue
        found += [problem(issue, f"stop its containers and remove it (docker network rm {name}); the "
                                 "spawner makes it again, internal") for issue in issues]
    if foreign:
        found.append(ok(f"skipped {len(foreign)} container(s) of projects this hub does not know: "
                        f"{', '.join(sorted(foreign))}"))
    if not found:
        found.append(ok("no project container running"))
    return found


def doctor(state: StateDir, out=print) -> int:
    try:
        runtime = state.runtime()
    except RuntimeError as error:
        out(f"hdshub doctor: {error}")
        return 1
    public_url = runtime["public_url"]
    out(f"hdshub doctor: {state.path}, {public_url}")
    findings = []
    for check in (
        lambda: check_state(state, runtime),
        lambda: check_tls(public_url, runtime, state),
        lambda: check_headers(public_url, runtime, state),
        lambda: check_proxy_api(state, runtime),
        lambda: check_internal_tls(state, runtime),
        lambda: check_firewall(runtime),
        lambda: check_containers(state),
    ):
        for finding in check():
            findings.append(finding)
            if finding.ok:
                out(f"  ok       {finding.what}")
            else:
                out(f"  PROBLEM  {finding.what}\n           fix: {finding.fix}")
    problems = [f for f in findings if not f.ok]
    out(f"{len(problems)} problem(s) found." if problems else "Everything checked is as it should be.")
    return 1 if problems else 0
