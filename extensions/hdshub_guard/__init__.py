"""hdshub_guard: the jupyter-server extension that runs inside every project container.

The one place deciding what may leave the container over HTTP (downloads, exports, file and
kernel APIs) and what goes into the audit trail, driven by the policy file the hub writes.
It is mounted read-only from the hub's release and required by the image's server
configuration (reraise_server_extension_failures): without it, or with a bad policy, the
server does not start. It shares data formats with the hub, never code.

- gate.py      every request is judged before any handler runs
- contents.py  file rules that need the file or the body (copies, sizes, uploads)
- kernels.py   execution requests traced, large outputs cut
- audit.py     events sent to the hub's tamper-evident trail
- isolation.py the hub token kept away from kernels
- reaper.py    orphans reaped, the server being the container's PID 1
"""

from __future__ import annotations

import os

from . import activity, audit, gate, isolation, messages, quota, reaper
from .contents import GuardedContentsManager, read_type, written_sha256
from .paths import PathJudge
from .policy import load as load_policy
from .state import GuardState, guard, set_guard

__version__ = "0.2.0"

#: JupyterLab commands that only move files to the user's machine: hidden (the gate is the
#: control; this only spares users buttons that would be refused).
DISABLED_LAB_PLUGINS = [
    "@jupyterlab/docmanager-extension:download",
    "@jupyterlab/filebrowser-extension:download",
    "@jupyterlab/filebrowser-extension:open-browser-tab",
    "@jupyterlab/notebook-extension:export",
    # The debugger's panels: its kernel messages are refused (kernels.NOTEBOOK_MESSAGE_TYPES).
    "@jupyterlab/debugger-extension",
]


DASHBOARD_MESSAGE_TYPES = ("comm_open", "comm_msg", "comm_close", "comm_info_request",
                           "kernel_info_request", "shutdown_request")


def _jupyter_server_extension_points():
    return [{"module": "hdshub_guard"}]


def _link_jupyter_server_extension(serverapp):
    """Before the server makes its managers: choose the guarded classes and read the policy."""
    policy = load_policy()
    GuardedContentsManager.guard_policy = policy
    serverapp.contents_manager_class = GuardedContentsManager
    from .kernels import NOTEBOOK_MESSAGE_TYPES, GuardedKernelConnection
    serverapp.kernel_websocket_connection_class = GuardedKernelConnection
    # Kernels talk to the server over Unix sockets in the private runtime folder rather than
    # TCP ports on the container's loopback.
    serverapp.config.KernelManager.transport = "ipc"
    # The tier (tiers.yaml): kernels per server and storage checked at each kernel start;
    # idle kernels are shut down (idle servers are stopped by the hub's idle culler).
    serverapp.kernel_manager_class = quota.GuardedKernelManager
    serverapp.config.MappingKernelManager.cull_idle_timeout = policy.idle_timeout_seconds
    serverapp.config.MappingKernelManager.cull_interval = 60
    serverapp.config.LabApp.check_for_updates_class = "hdshub_guard.notice.StorageNotice"
    if policy.mode == "dashboard":
        # Viewers' pages may only drive widgets: no execute request reaches a kernel from
        # the browser, whatever a page sends.
        serverapp.config.MappingKernelManager.allowed_message_types = list(DASHBOARD_MESSAGE_TYPES)
    else:
        # Everything JupyterLab sends but the debugger, which reads any file and variable
        # outside the traced execution requests and the output budget.
        serverapp.config.MappingKernelManager.allowed_message_types = list(NOTEBOOK_MESSAGE_TYPES)
    serverapp.log.info("hdshub_guard: project %s, mode %s", policy.project, policy.mode)


def _load_jupyter_server_extension(serverapp):
    policy = GuardedContentsManager.guard_policy
    if not isinstance(serverapp.contents_manager, GuardedContentsManager):
        raise RuntimeError("hdshub_guard: the contents manager was replaced; refusing to run")
    token = _pin_hub_token(serverapp)  # before it leaves the environment
    isolation.take_secrets()
    isolation.make_undumpable()
    judge = PathJudge(serverapp.root_dir, policy)
    client = audit.AuditClient(os.environ["JUPYTERHUB_API_URL"], token)
    base_url = serverapp.base_url
    set_guard(GuardState(policy=policy, judge=judge, audit=client, base_url=base_url,
                         storage=quota.StorageMeter(serverapp.root_dir)))
    the_gate = gate.Gate(base_url, judge, policy.mode)
    serverapp.web_app.settings["hdshub_gate"] = the_gate
    gate.install(serverapp.web_app, the_gate)
    client.record(None, "guard-start", policy.project, mode=policy.mode)
    client.start()
    _flush_at_shutdown(serverapp, client)
    reaper.start_if_init(serverapp.log)
    activity.count_busy_kernels(serverapp)
    _stop_at_max_age(serverapp, policy, client)
    serverapp.log.info("hdshub_guard %s enforcing %s", __version__, os.environ.get("HDSHUB_POLICY_PATH"))


def _stop_at_max_age(serverapp, policy, client) -> None:
    """The tier's maximum server age: the server stops itself, whatever it is doing (saved
    files are on the volumes; JupyterHub sees the server stop)."""
    import asyncio

    def stop():
        serverapp.log.warning("hdshub_guard: maximum age of %s s reached, stopping", policy.max_age_seconds)
        client.record(None, "server-max-age", policy.project, seconds=policy.max_age_seconds)
        asyncio.ensure_future(_flush_then_stop(serverapp, client))

    asyncio.get_event_loop().call_later(policy.max_age_seconds, stop)


def _flush_at_shutdown(serverapp, client) -> None:
    """Deliver what is still queued when the server stops (SIGTERM, culling, hub stop):
    a module extension has no stop hook of its own, so this follows the server's cleanup of
    extensions."""
    cleanup = serverapp.cleanup_extensions

    async def cleanup_then_flush():
        await cleanup()
        try:
            await client.flush()
        except Exception:
            serverapp.log.exception("hdshub_guard: audit events could not be delivered at shutdown")

    serverapp.cleanup_extensions = cleanup_then_flush


async def _flush_then_stop(serverapp, client) -> None:
    try:
        await client.flush()
    except Exception:
        serverapp.log.exception("hdshub_guard: audit events could not be delivered before stopping")
    finally:
        serverapp.stop()


def _pin_hub_token(serverapp) -> str:
    """Give every HubAuth of this server its token explicitly: they read it lazily from the
    environment (the single-user extension's own one only when it first reports activity),
    and the token is about to leave the environment."""
    token = serverapp.identity_provider.hub_auth.api_token
    if not token:
        raise RuntimeError("hdshub_guard: no hub token: this server was not started by the hub")
    holders = [serverapp.identity_provider]
    for apps in serverapp.extension_manager.extension_apps.values():
        holders.extend(apps)
    for holder in holders:
        hub_auth = getattr(holder, "hub_auth", None)
        if hub_auth is not None:
            hub_auth.api_token = token
    return token


async def _start_jupyter_server_extension(serverapp):
    # After every extension has loaded: JupyterHub's extension sets its page hook and its
    # request log function at load, replacing whatever came before.
    _hide_download_commands(serverapp.web_app)
    from .terminals import install as guard_terminals
    guard_terminals(serverapp)  # once jupyter_server_terminals has registered its route
    _trace_requests(serverapp.web_app, guard_gate(serverapp))


def guard_gate(serverapp) -> gate.Gate:
    return serverapp.web_app.settings["hdshub_gate"]


def _hide_download_commands(web_app) -> None:
    """Add our plugins to JupyterLab's disabled list, after JupyterHub's own page hook."""
    previous = web_app.settings.get("page_config_hook")

    def page_config_hook(handler, page_config):
        if previous is not None:
            page_config = previous(handler, page_config)
        disabled = page_config.get("disabledExtensions") or []
        page_config["disabledExtensions"] = sorted(set(disabled) | set(DISABLED_LAB_PLUGINS))
        return page_config

    web_app.settings["page_config_hook"] = page_config_hook


def _trace_requests(web_app, the_gate: gate.Gate) -> None:
    """Extend the request log: every traced request also becomes an audit event."""
    log_request = web_app.settings["log_function"]

    def log_function(handler):
        log_request(handler)
        try:
            _trace(handler, the_gate)
        except Exception:
            web_app.settings.get("serverapp").log.exception("hdshub_guard: tracing failed")

    web_app.settings["log_function"] = log_function


def _trace(handler, the_gate: gate.Gate) -> None:
    request = handler.request
    status = handler.get_status()
    rest = the_gate.route(request.path)
    if rest is None:
        return
    refusal = getattr(handler, "hdshub_refusal", None) or messages.current_refusal.get()
    state = guard()
    user = audit.user_name(getattr(handler, "_jupyter_current_user", None)
                           or getattr(handler, "_current_user", None)) or audit.ANONYMOUS
    if refusal is not None and status in (403, 507):  # a rule's refusal, with its reason
        state.audit.record(user, "request", f"{request.method} {rest}", outcome="refused",
                           reason=refusal.reason, client_ip=audit.client_ip(request))
        return
    described = audit.describe(request.method, rest, status, request.query, request.body,
                               state.judge.is_directory, written_sha256.get(), read_type.get())
    if described is None:
        return
    action, target, details = described
    outcome = "ok" if status < 400 else "failed"
    state.audit.record(user, action, target, outcome=outcome, status=status,
                       client_ip=audit.client_ip(request), **details)
