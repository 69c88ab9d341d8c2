"""`hdshub up`: the whole stack on embedded defaults, from a fresh clone, in one command.

Builds missing images, prepares the host (hub address, firewall, TLS certificate), starts
JupyterHub (which starts configurable-http-proxy, serving https only), then makes sure an
administrator and the demo project exist. Runs in the foreground until interrupted; project
servers survive a restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from urllib.parse import urlparse

import docker
import docker.errors
import requests
import urllib3

from . import accounts, demo, firewall, internal_tls, manage, tls
from .hub_api import HubAPI
from .kits import load_kits
from .oidc import load_oidc_settings
from .egress import load_egress
from .settings import REPO_ROOT, Settings, load_settings, site_file
from .tiers import load_tiers
from .state import StateDir

HUB_NETWORK = "hds-hub"
CONFIG_FILE = REPO_ROOT / "hub_config" / "jupyterhub_config.py"


def ensure_hub_network(client: docker.DockerClient) -> str:
    """A bridge used only to give the hub API a host address off every public interface."""
    try:
        network = client.networks.get(HUB_NETWORK)
    except docker.errors.NotFound:
        network = client.networks.create(
            HUB_NETWORK,
            driver="bridge",
            internal=True,
            options={"com.docker.network.bridge.name": HUB_NETWORK},
            labels={"org.hdshub.purpose": "hub-address"},
        )
        network.reload()
    return network.attrs["IPAM"]["Config"][0]["Gateway"]


def wait_for(url: str, timeout: float, hub: subprocess.Popen, log: Path,
             session: requests.Session | None = None, verify: str | bool = True) -> None:
    session = session or requests.Session()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hub.poll() is not None:
            raise RuntimeError(f"JupyterHub exited ({hub.returncode}):\n{tail(log)}")
        try:
            with warnings.catch_warnings():  # verify=False: said once below, not at each poll
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                if session.get(url, timeout=2, verify=verify).status_code < 500:
                    return
        except (requests.RequestException, OSError):  # OSError: internal CA not written yet
            pass
        time.sleep(0.3)
    raise RuntimeError(f"JupyterHub did not answer at {url} within {timeout:.0f}s:\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def bootstrap(state: StateDir, settings: Settings, admin_user: str, with_demo: bool, out) -> None:
    """Create the local administrator and the demo project if they do not exist yet.

    With OIDC, administrators come from the identity provider's admin group: no local
    account is made, and the demo project has no member until one is added.
    """
    api = HubAPI.from_state(state)
    local_accounts = settings.oidc is None
    if local_accounts and not accounts.has_local_account(state, admin_user):
        password = accounts.add_local_account(api, state, admin_user)
        out(f"\n  Administrator account: {admin_user}")
        out(f"  Password (shown once, keep it safe): {password}\n")
    if with_demo and api.get_group(demo.DEMO_SLUG) is None:
        create_demo(api, settings, admin_user, local_accounts, out)
    if with_demo:
        publish_demo_dashboard(api, out)


def create_demo(api: HubAPI, settings: Settings, admin_user: str, local_accounts: bool, out) -> None:
    kit = "python-stats" if "python-stats" in settings.kits else sorted(settings.kits)[0]
    manage.create_project(api, manage.check_new_project(
        settings.tiers, settings.kits, demo.DEMO_SLUG, "public", kit, demo.DEMO_TITLE
    ))
    if local_accounts:
        manage.add_member(api, demo.DEMO_SLUG, admin_user, "analyst")
    with tempfile.TemporaryDirectory() as tmp:
        data = demo.write_cohort(Path(tmp) / demo.DEMO_FILE)
        manage.import_data(api, docker.from_env(), demo.DEMO_SLUG, data, by="hdshub up")
    out(f"[up] demo project '{demo.DEMO_SLUG}' created with a synthetic cohort")


def publish_demo_dashboard(api: HubAPI, out) -> None:
    """The demo's dashboard, published once (a withdrawn one stays withdrawn)."""
    project = manage.get_project(api, demo.DEMO_SLUG)
    if any(d["name"] == demo.DEMO_DASHBOARD.stem for d in project.dashboards):
        return
    notebook = demo.copy_to_work(docker.from_env(), demo.DEMO_SLUG, demo.DEMO_DASHBOARD)
    api.timeout = 180  # publishing starts the dashboard server
    reply = api.request("POST", f"/hdshub/dashboards/{demo.DEMO_SLUG}",
                        json={"notebook": notebook, "by": "hdshub up"})
    out(f"[up] demo dashboard '{reply['name']}' published from {notebook} (server {reply['server']})")


def check_policies() -> None:
    config_dir = os.environ.get("HDSHUB_CONFIG_DIR")
    config_path = Path(config_dir) if config_dir else None
    load_tiers(site_file(config_path, "tiers.yaml"))
    load_egress(site_file(config_path, "egress.yaml"))
    load_kits()
    load_oidc_settings(config_path)


def up(
    state: StateDir,
    public_url: str,
    hub_port: int,
    proxy_api_port: int,
    admin_user: str,
    build: bool,
    with_demo: bool,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    out=print,
) -> int:
    check_policies()  # a bad tiers file or kit manifest stops here, before anything is made
    host = urlparse(public_url).hostname
    # So does a bad site certificate; without one, a self-signed one is made below.
    site_tls = tls.site_certificate(host, tls_cert, tls_key) if tls_cert or tls_key else None
    state.ensure()
    state.ensure_cookie_secret()
    served = site_tls or tls.self_signed(state.tls_dir, host)
    if served.generated:
        out(f"[up] TLS: self-signed certificate {served.cert} (give a real one with "
            "--tls-cert/--tls-key)")
    client = docker.from_env()
    if build:
        from .images import build_images

        out("[up] images: building what is missing or out of date")
        build_images(progress=out)
    hub_ip = ensure_hub_network(client)
    out(f"[up] hub API on {hub_ip}:{hub_port} (reachable from project networks only)")
    firewall.apply_rules(hub_ip, hub_port)
    state.write_runtime(
        {
            "hub_ip": hub_ip,
            "hub_port": hub_port,
            "proxy_api_port": proxy_api_port,
            "public_url": public_url,
            "admin_user": admin_user,
            "tls_cert": str(served.cert),
            "tls_key": str(served.key),
        }
    )

    log = state.path / "logs" / "jupyterhub.log"
    env = {
        **os.environ,
        "HDSHUB_STATE_DIR": str(state.path),
        # JupyterHub 6.1.1 reads the auth_state key from its environment only.
        "JUPYTERHUB_CRYPT_KEY": state.secret("auth-state-crypt-key"),
    }
    # Started in the background by a shell without job control (`bin/up &` in a script),
    # `up` ignores SIGINT, and an ignored signal is inherited: the hub and its services (idle
    # culler, usage sampler) would ignore the SIGINT with which JupyterHub stops them, and
    # each would be stopped only after JupyterHub's timeouts, a stop taking a minute.
    # Python's own handler is not inherited: the hub starts with the default.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with open(log, "ab") as log_file:
        hub = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG_FILE)],
            cwd=state.path, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            # The database (password hashes, tokens) and pid files: owner only.
            start_new_session=True, umask=0o077,
        )
    out(f"[up] JupyterHub starting (log: {log})")
    try:
        internal = internal_tls.client_session(state.internal_certs_dir)
        wait_for(f"https://{hub_ip}:{hub_port}/hub/api/", 90, hub, log, internal, verify=internal.verify)
        internal_tls.make_private(state.internal_certs_dir)
        # The generated certificate is its own authority; a site's may be issued for a name
        # this address is not, and the public check belongs to 'hdshub doctor'.
        wait_for(public_url.rstrip("/") + "/hub/login", 30, hub, log,
                 verify=str(served.cert) if served.generated else False)
        settings = load_settings(state)  # once: with OIDC it fetches the provider's metadata
        bootstrap(state, settings, admin_user, with_demo, out)
    except BaseException:
        hub.terminate()
        hub.wait(30)
        raise
    out(f"\n  hdshub is running: {public_url.rstrip('/')}/hub/login")
    if settings.oidc is None:
        out(f"  Log in as '{admin_user}'. Stop with Ctrl-C.\n")
    else:
        out("  Log in through your identity provider. Stop with Ctrl-C.\n")

    def forward(signum, _frame):
        hub.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return hub.wait()


def public_url_checked(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme != "https" or not parsed.hostname or not parsed.port:
        raise ValueError(f"--bind-url {url!r}: expected an https URL such as "
                         "https://127.0.0.1:8000 (hdshub serves https only)")
    return url
