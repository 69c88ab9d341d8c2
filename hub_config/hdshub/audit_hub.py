"""The events the hub records itself: logins, logouts, project servers started and stopped.

JupyterHub has a hook for some of these and none for others, so each comes in where the
hub knows the outcome:
- login accepted: `Authenticator.post_auth_hook`, called after every check (allowed, blocked,
  groups) for any authenticator, local accounts or OpenID Connect;
- login refused and logout: the request log (`log_function`), which sees every finished
  request with its status; no authenticator hook runs for a refusal or a logout;
- server start: `Spawner.pre_spawn_hook` watches the start JupyterHub is running and records
  its outcome (ok, refused with the refusal's reason, failed); server stop:
  `Spawner.post_stop_hook`.

Writes go through one thread per trail (Recorder): the hub's event loop never waits on a
disk, and events keep the order they happened in.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jupyterhub import orm
from jupyterhub.log import log_request
from jupyterhub.utils import url_path_join
from tornado import web

from .audit_log import CONTROL, HUB_STREAM, AuditTrail, utc_now
from .projects import Project

log = logging.getLogger("JupyterHub")


class Recorder:
    """The hub's one writer of a trail."""

    def __init__(self, directory: Path):
        self.trail = AuditTrail(directory)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="hdshub-audit")

    @classmethod
    @functools.cache
    def for_directory(cls, directory: str) -> "Recorder":
        # Configuration values are deep-copied by traitlets: hooks and handlers find the one
        # Recorder of their directory here rather than carrying it.
        return cls(Path(directory))

    def submit(self, stream: str, event: dict) -> None:
        """Record without waiting; a failure is logged (the hub keeps serving)."""
        future = self.executor.submit(self.trail.append, stream, event)
        future.add_done_callback(_log_failure)

    async def write(self, stream: str, events: list[dict]) -> int:
        """Record and wait until the events are on disk."""
        written = await asyncio.wrap_future(self.executor.submit(self.trail.append_many, stream, events))
        return len(written)


def _log_failure(future) -> None:
    if future.exception() is not None:
        log.error("hdshub audit: an event could not be recorded: %s", future.exception())


# -- who is asking --------------------------------------------------------------------------


def trusted_proxies(hub_ip: str) -> frozenset[str]:
    """Addresses configurable-http-proxy reaches the hub from."""
    return frozenset({"127.0.0.1", "::1", hub_ip})


def peer_ip(request) -> str:
    """The address of the socket the request came on, whatever its headers claim.

    JupyterHub serves with xheaders=True, so `request.remote_ip` follows X-Real-Ip, which any
    client (or a container calling the hub API directly) may set.
    """
    address = request.connection.context.address
    ip = ipaddress.ip_address(address[0] if isinstance(address, tuple) else address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def client_ip(request, trusted: frozenset[str]) -> str:
    """The browser's address: from the proxy, the entry the proxy itself appended to
    X-Forwarded-For (the last); otherwise the socket's peer."""
    peer = peer_ip(request)
    if peer not in trusted:
        return peer
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
    try:
        ip = ipaddress.ip_address(forwarded)
    except ValueError:
        return peer
    return str(getattr(ip, "ipv4_mapped", None) or ip)


def printable(text: str, limit: int) -> str:
    """User input fit for a one-line field: control characters shown escaped, cut."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)[:limit]


# -- logins and logouts ---------------------------------------------------------------------


def login_hook(directory: str, trusted: frozenset[str]):
    """Authenticator.post_auth_hook recording each accepted login."""

    def post_auth_hook(authenticator, handler, authentication):
        Recorder.for_directory(directory).submit(HUB_STREAM, {
            "time": utc_now(), "user": authentication["name"], "action": "login",
            "target": "hub", "outcome": "ok",
            "source_ip": client_ip(handler.request, trusted) if handler else "",
            "details": {"authenticator": type(authenticator).__name__},
        })
        return authentication

    return post_auth_hook


def request_logger(directory: str, trusted: frozenset[str]):
    """A tornado log_function: JupyterHub's request log, plus refused logins and logouts."""

    def log_function(handler) -> None:
        log_request(handler)
        try:
            event = session_event(handler, trusted)
        except Exception:
            log.exception("hdshub audit: could not describe %s", handler.request.path)
            return
        if event is not None:
            Recorder.for_directory(directory).submit(HUB_STREAM, event)

    return log_function


def session_event(handler, trusted: frozenset[str]) -> dict | None:
    """The login refusal or logout a finished hub request was, if it was one."""
    request, status, settings = handler.request, handler.get_status(), handler.settings
    if request.method == "POST" and request.path == settings["login_url"] and status == 403:
        # The name typed is kept as typed (escaped and cut): it is what was attempted.
        name = handler.get_body_argument("username", default="", strip=True)
        event = {"user": printable(name, 64), "action": "login", "outcome": "refused",
                 "details": {"status": status}}
    elif request.path == url_path_join(settings["hub"].base_url, "oauth_callback") and status >= 400:
        event = {"user": "", "action": "login", "outcome": "refused",
                 "details": {"status": status, "authenticator": type(handler.authenticator).__name__}}
    elif request.path == settings["logout_url"] and status < 400:
        # The logout handler forgets its user before the log runs; the request still carries
        # the login cookie it cleared, which names that user.
        user = handler.get_current_user_cookie()
        if user is None:
            return None  # nobody was logged in: nothing happened
        event = {"user": user.name, "action": "logout", "outcome": "ok"}
    else:
        return None
    return {"time": utc_now(), "target": "hub", "source_ip": client_ip(request, trusted), **event}


# -- project servers ------------------------------------------------------------------------


def server_hooks(directory: str, trusted: frozenset[str]):
    """(Spawner.pre_spawn_hook, Spawner.post_stop_hook) recording server starts and stops."""

    def pre_spawn_hook(spawner) -> None:
        # The request that asked for the start: its user may be an administrator.
        handler = getattr(spawner, "handler", None)
        requester = getattr(handler, "current_user", None) if handler else None
        started = {"user": getattr(requester, "name", "") or spawner.user.name,
                   "source_ip": client_ip(handler.request, trusted) if handler else ""}
        # JupyterHub runs each start as this future (its pages show a failed start from it);
        # it is the one place the outcome of a start, refusal reason included, exists.
        future = getattr(spawner, "_spawn_future", None)
        if future is None:
            log.warning("hdshub audit: cannot follow the start of %s", spawner._log_name)
            return
        def settled(future) -> None:
            try:
                Recorder.for_directory(directory).submit(*start_event(spawner, started, future))
            except Exception:
                log.exception("hdshub audit: could not record the start of %s", spawner._log_name)

        future.add_done_callback(settled)

    def post_stop_hook(spawner) -> None:
        future = getattr(spawner, "_spawn_future", None)
        if future is not None and (not future.done() or (not future.cancelled() and future.exception())):
            return  # the clean-up of a start that failed: recorded as that start's outcome
        Recorder.for_directory(directory).submit(*stop_event(spawner))

    return pre_spawn_hook, post_stop_hook


def start_event(spawner, started: dict, future) -> tuple[str, dict]:
    owner = spawner.user.name
    details = {"owner": owner, "server": f"{owner}/{spawner.name}"}
    error = None if future.cancelled() else future.exception()
    if future.cancelled():
        outcome, details["reason"] = "failed", "cancelled"
    elif error is None:
        outcome = "ok"
        details.update(image=kit_image(spawner), server_ip=getattr(spawner.server, "ip", None))
    else:
        refused = isinstance(error, web.HTTPError) and 400 <= error.status_code < 500
        outcome = "refused" if refused else "failed"
        message = getattr(error, "jupyterhub_message", None) or getattr(error, "log_message", None) or str(error)
        details["reason"] = printable(str(message), 1000)
    event = {"time": utc_now(), "action": "server-start", "target": details["server"],
             "outcome": outcome, **started, "details": {k: v for k, v in details.items() if v}}
    return stream_of(spawner), event


def stop_event(spawner) -> tuple[str, dict]:
    owner = spawner.user.name
    details = {"owner": owner, "server": f"{owner}/{spawner.name}", "image": kit_image(spawner)}
    event = {"time": utc_now(), "user": owner, "action": "server-stop", "target": details["server"],
             "outcome": "ok", "details": {k: v for k, v in details.items() if v}}
    return stream_of(spawner), event


def kit_image(spawner) -> str | None:
    """The image the server ran, when this hub started it (after a restart the spawner only
    knows its configured default)."""
    image = getattr(spawner, "image", None)
    return image if image in getattr(spawner, "kit_images", {}).values() else None


def stream_of(spawner) -> str:
    """The project's stream, when the server names a project that exists; else the hub's (a
    refused start must not create a file for any name a request made up)."""
    group = orm.Group.find(spawner.user.db, name=spawner.name) if spawner.name else None
    project = Project.from_group(spawner.name, group.properties) if group else None
    return project.slug if project else HUB_STREAM
