"""Audit events from inside the container, sent to the hub's audit trail.

The hub (hdshub.audit_log) chains and stores them where no container can write; it also
decides which project and server an event belongs to, from the sending server's token and
address. Here events are only described and delivered: queued, sent in batches, kept and
retried while the hub is unreachable (bounded; an overflow is itself reported).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import itertools
import json
import logging
import os
import ssl
from collections import deque
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("hdshub_guard.audit")

AUDIT_PATH = "/hdshub/audit/events"
#: One delivery's bounds, within what the hub accepts (hdshub.audit_api: 1000 events, 1 MiB):
#: a post a second carries all a busy server did meanwhile, and no batch of long events
#: (code excerpts full of escaped characters) can be refused for its size.
BATCH_EVENTS = 1000
BATCH_BYTES = 512 * 1024
QUEUE_MAX = 10_000
FLUSH_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0
#: Code of an execution request kept in the trail (the whole code's sha256 is always kept).
CODE_EXCERPT = 4000
#: The user of a request nobody authenticated; the hub keeps it (never the server's owner).
ANONYMOUS = "-"


def hub_tls() -> ssl.SSLContext | None:
    """The server's own certificate towards the hub, which checks it (JupyterHub's
    internal_ssl puts the files' paths in the environment); None without internal TLS."""
    cert, key, ca = (os.environ.get(f"JUPYTERHUB_SSL_{name}") for name in ("CERTFILE", "KEYFILE", "CLIENT_CA"))
    if not (cert and key):
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.load_cert_chain(cert, key)
    return context


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class HubConnection:
    """One connection to the hub's audit endpoint, kept open from one post to the next.

    tornado's client opens a new connection for every request, and so makes a TLS handshake
    with the server's certificate once a second on each server and, for every server, on
    the hub. Posts go out one at a time (AuditClient's lock), from a worker thread: a hub
    slow to answer never holds up the server. A kept connection the hub closed meanwhile is
    opened again once; any other failure is the caller's to retry later."""

    TIMEOUT_SECONDS = 10

    def __init__(self, url: str, token: str, tls: ssl.SSLContext | None):
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self.secure = parts.scheme == "https"
        self.tls = tls
        self.headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
        self._connection: http.client.HTTPConnection | None = None
        #: Connections opened so far: one for the server's life while the hub stays up.
        self.opened = 0

    def post(self, body: bytes) -> tuple[int, bytes]:
        """(status, body) of the hub's answer. Raises OSError or HTTPException."""
        kept = self._connection is not None
        try:
            return self._post(body)
        except (ConnectionError, http.client.BadStatusLine):
            if not kept:
                raise
            # The hub closed the kept connection (it restarted, or timed an idle connection
            # out), in all likelihood before reading this post: send it once more. At worst
            # the hub had recorded it and the trail holds it twice; never is it lost.
            return self._post(body)

    def _post(self, body: bytes) -> tuple[int, bytes]:
        """One post; any failure closes the connection (a half-read answer would garble
        the next one), the retried post's included."""
        try:
            return self._post_on_connection(body)
        except BaseException:
            self.close()
            raise

    def _post_on_connection(self, body: bytes) -> tuple[int, bytes]:
        if self._connection is None:
            if self.secure:
                self._connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.TIMEOUT_SECONDS,
                    context=self.tls or ssl.create_default_context())
            else:
                self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.TIMEOUT_SECONDS)
            self.opened += 1
        self._connection.request("POST", self.path, body=body, headers=self.headers)
        response = self._connection.getresponse()
        answer = response.read()
        if response.will_close:
            self.close()
        return response.status, answer

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class HubRefused(Exception):
    """The hub answered but did not take the batch, and may take it later (401, 403, 429, 5xx)."""


class AuditClient:
    def __init__(self, api_url: str, token: str):
        self.queue: deque[dict] = deque()
        self.dropped = 0
        self.hub = HubConnection(api_url.rstrip("/") + AUDIT_PATH, token, hub_tls())
        self._task: asyncio.Task | None = None
        self._sending = asyncio.Lock()

    def record(self, user: str | None, action: str, target: str, outcome: str = "ok",
               **details) -> None:
        event = {"time": utc_now(), "action": action, "target": target[:1000], "outcome": outcome}
        if user:
            event["user"] = user
        details = {k: v for k, v in details.items() if v is not None}
        if details:
            event["details"] = details
        if len(self.queue) >= QUEUE_MAX:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(event)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        delay = FLUSH_SECONDS
        while True:
            await asyncio.sleep(delay)
            try:
                await self.flush()
                delay = FLUSH_SECONDS
            except Exception as error:  # unreachable, or refusing for now: keep, retry later
                log.warning("hdshub audit: events not delivered (%s), %d kept", error, len(self.queue))
                delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def flush(self) -> None:
        """Send what is queued now, in batches; what arrives meanwhile waits for the next
        flush. (Sending until the queue is empty kept a busy server posting back to back,
        a few events and a new TLS connection each time: measured 8 posts a second.)"""
        async with self._sending:  # the periodic flush and a shutdown flush never overlap
            await self._send_queued()

    async def _send_queued(self) -> None:
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            self.queue.appendleft({"time": utc_now(), "action": "audit-overflow",
                                   "target": "guard", "outcome": "failed",
                                   "details": {"dropped": dropped}})
        pending = len(self.queue)
        while pending > 0 and self.queue:
            count, body = self._batch(min(pending, BATCH_EVENTS))
            pending -= count
            code, answer = await asyncio.get_running_loop().run_in_executor(
                None, self.hub.post, body.encode())
            if code != 201:
                log.warning("hdshub audit: hub answered %s: %s", code, answer[:300])
                if 400 <= code < 500 and code not in (401, 403, 429):
                    # A batch the hub will never accept would block the trail: drop it, and
                    # say so in the trail itself (the next flush sends an audit-overflow).
                    for _ in range(count):
                        self.queue.popleft()
                    self.dropped += count
                    return
                # Refused for now (not authorised yet or any more, too many posts, a hub
                # error): the same batch a second later would be refused again, so the
                # events are kept and the next tries come as for an unreachable hub, ever
                # further apart. (Posted again every second, a refused server re-sent its
                # oldest thousand events, half a megabyte, to the hub each second.)
                raise HubRefused(f"hub answered {code}")
            for _ in range(count):
                self.queue.popleft()

    def _batch(self, most: int) -> tuple[int, str]:
        """(how many of the oldest events, the request body carrying them): at most `most`
        events and BATCH_BYTES, and always at least one (an event is at most some 40 kB)."""
        parts, size = [], 0
        for event in itertools.islice(self.queue, most):
            text = json.dumps(event)  # ASCII: as many bytes as characters
            if parts and size + len(text) + 1 > BATCH_BYTES:
                break
            parts.append(text)
            size += len(text) + 1
        return len(parts), '{"events": [' + ",".join(parts) + "]}"


def user_name(user) -> str | None:
    """The name of an authenticated user as jupyter-server gives it (object or dict)."""
    if user is None:
        return None
    if isinstance(user, dict):
        return user.get("name")
    return getattr(user, "username", None) or getattr(user, "name", None)


def client_ip(request) -> str:
    """The browser's address: the last X-Forwarded-For entry, the one JupyterHub's proxy
    appended (earlier entries come from the browser and can say anything)."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    return forwarded.split(",")[-1].strip() or request.remote_ip


def sha256_of(path: str) -> str | None:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def describe(method: str, rest: str, status: int, query: str, body: bytes,
             is_directory, written_sha256: str | None = None,
             read_type: str | None = None) -> tuple[str, str, dict] | None:
    """(action, target, details) of a request worth tracing, None for the rest.

    Directory listings, static files and page loads are not traced: they carry no data.
    is_directory tells whether a contents path names a folder (PathJudge.is_directory): the
    request is over and was judged, so the trail only needs to stat what it named, when the
    contents manager did not say what it read (read_type). written_sha256 is the hash the contents
    manager took as it saved (None for an upload's earlier chunks).
    """
    if rest.startswith("api/contents/") or rest == "api/contents":
        path = rest[len("api/contents/"):]
        if method == "GET":
            if parse_qs(query).get("content", ["1"])[-1] == "0":
                return None
            if read_type == "directory" or (read_type is None and is_directory(path)):
                return None
            return "contents-read", path, {}
        if method == "PUT":
            return "contents-write", path, {"sha256": written_sha256}
        if method == "POST":
            return "contents-create", path, {}
        if method == "PATCH":
            try:
                new_path = json.loads(body or b"{}").get("path")
            except ValueError:
                new_path = None
            return "contents-rename", path, {"new_path": new_path}
        if method == "DELETE":
            return "contents-delete", path, {}
        return None
    if rest in ("api/kernels", "api/sessions") and method == "POST":
        return "kernel-start", rest, {}
    if rest.startswith("api/kernels/") and method == "DELETE":
        return "kernel-stop", rest[len("api/kernels/"):], {}
    if rest == "api/terminals" and method == "POST":
        return "terminal-start", "terminal", {}
    if rest.startswith("api/terminals/") and method == "DELETE":
        return "terminal-stop", rest[len("api/terminals/"):], {}
    return None


def code_event(code: str) -> dict:
    return {
        "sha256": hashlib.sha256(code.encode()).hexdigest(),
        "length": len(code),
        "code": code[:CODE_EXCERPT],
    }
