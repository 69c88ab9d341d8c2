"""POST /hub/api/hdshub/audit/events: where project servers deliver their audit events.

The guard extension in each project container sends what happened there (files read and
written, code run, refusals). The hub decides who sent them, never the body: the request's
token must be the own token of a running named server whose container address is the
request's socket address (not a header: JupyterHub believes X-Real-Ip). The project is that
server's name; the events go to that project's trail.

Text a user could influence (file names, code, addresses) is escaped and cut here, never
refused: no input made inside a container can get a whole batch of events dropped. What
only the guard decides (actions, outcomes, field types) is checked strictly.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re

from jupyterhub.apihandlers.base import APIHandler

from . import audit_log, naming
from .audit_hub import Recorder, peer_ip, printable
from .spawner import refusal

ROUTE = r"/api/hdshub/audit/events"
MAX_BODY_BYTES = 1 << 20
MAX_EVENTS = 1000
SENT_FIELDS = {"time", "user", "action", "target", "outcome", "details"}
#: The user of a request nobody authenticated (a refusal before login): never the owner,
#: and not a username, so no account can be confused with it.
ANONYMOUS = "-"


class AuditEventsHandler(APIHandler):
    def initialize(self, audit_dir: str):
        self.recorder = Recorder.for_directory(audit_dir)

    async def post(self):
        spawner = await self.sending_server()
        if len(self.request.body) > MAX_BODY_BYTES:
            raise refusal(413, f"Corps de requête trop grand (plus de {MAX_BODY_BYTES} octets) : "
                               "envoyez les événements en plusieurs fois.",
                          f"Request body too large (over {MAX_BODY_BYTES} bytes): send the events "
                          "in several batches.")
        events = self.sent_events()
        server = f"{spawner.user.name}/{spawner.name}"
        try:
            lines = [attribute(event, spawner.user.name, server, peer_ip(self.request))
                     for event in events]
            written = await self.recorder.write(spawner.name, lines)
        except audit_log.AuditError as error:
            raise bad_body(str(error)) from None
        self.set_status(201)
        self.finish({"written": written})

    async def sending_server(self):
        """The running named server that sent this request, or a 403."""
        token = self.get_auth_token()
        orm_token = self.get_token() if token else None
        user = self.current_user
        if orm_token is None or orm_token.user is None or getattr(user, "name", None) != orm_token.user.name:
            raise not_a_server()
        peer = peer_ip(self.request)
        for name, spawner in user.spawners.items():
            if not name or not spawner.active or spawner.server is None or spawner.server.ip != peer:
                continue
            expected = spawner.api_token or await token_in_container(spawner)
            if expected and hmac.compare_digest(expected.encode(), token.encode()):
                return spawner
        raise not_a_server()

    def sent_events(self) -> list:
        try:
            body = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError):
            raise bad_body("the body is not JSON") from None
        if not isinstance(body, dict) or set(body) != {"events"} or not isinstance(body["events"], list):
            raise bad_body('expected {"events": [...]} and nothing else')
        if len(body["events"]) > MAX_EVENTS:
            raise bad_body(f"{len(body['events'])} events in one request, {MAX_EVENTS} at most")
        return body["events"]


# Container id -> the token it was started with, read back after a hub restart.
_tokens_read_back: dict[str, str] = {}


async def token_in_container(spawner) -> str | None:
    """The token a server was started with, from its container, when the hub has restarted
    since and kept no copy (DockerSpawner reads it the same way when it reuses a container)."""
    container_id = getattr(spawner, "object_id", None)
    if not container_id:
        return None
    if container_id not in _tokens_read_back:
        try:
            container = await spawner.docker("inspect_container", container_id)
        except Exception:
            return None
        for line in container["Config"].get("Env") or []:
            if line.startswith("JUPYTERHUB_API_TOKEN="):
                _tokens_read_back[container_id] = line.split("=", 1)[1]
    return _tokens_read_back.get(container_id)


def attribute(event: object, owner: str, server: str, server_ip: str) -> dict:
    """The event as the trail stores it: identity from the hub, text made one-line."""
    if not isinstance(event, dict):
        raise audit_log.AuditError(f"an event must be an object, got {type(event).__name__}")
    unknown = set(event) - SENT_FIELDS
    if unknown:
        raise audit_log.AuditError(
            f"fields {sorted(unknown)} are set by the hub, not sent: send {', '.join(sorted(SENT_FIELDS))}")
    if event.get("action") not in audit_log.GUARD_ACTIONS:
        # Logins and server starts are the hub's to record: a server cannot claim one.
        raise audit_log.AuditError(f"action {event.get('action')!r} not accepted from a server: "
                                   f"expected one of {', '.join(sorted(audit_log.GUARD_ACTIONS))}")
    if not isinstance(event.get("target"), str):
        raise audit_log.AuditError("event field 'target' must be a string")
    details = event.get("details") or {}
    if not isinstance(details, dict):
        raise audit_log.AuditError("event field 'details' must be an object")
    details = {key: cut(value, audit_log.MAX_DETAIL_STRING) for key, value in details.items()}
    source_ip = ""
    claimed = details.pop("client_ip", None)
    if claimed is not None:
        try:
            source_ip = str(ipaddress.ip_address(str(claimed)))
        except ValueError:
            details["client_ip_invalid"] = printable(str(claimed), 64)
    user = event.get("user")
    valid_user = user == ANONYMOUS or isinstance(user, str) and re.fullmatch(naming.USERNAME_PATTERN, user)
    sent_time = event.get("time")
    if isinstance(sent_time, str):
        details["sent_time"] = printable(sent_time, 40)
    return {
        # The hub's clock, not the sender's: exports select events by this time, so a
        # server cannot move an event in or out of a period (a batch waits about a second).
        "time": audit_log.utc_now(),
        # The user of the request inside the server (a collaborator given access, say), or
        # nobody (ANONYMOUS); anything else is the server's owner.
        "user": user if valid_user else owner,
        "action": event.get("action"),
        "target": printable(event["target"], audit_log.MAX_TARGET) or "-",
        "outcome": event.get("outcome"),
        "source_ip": source_ip,
        "details": {**details, "server": server, "server_ip": server_ip},
    }


def cut(value, limit: int):
    return value[:limit] if isinstance(value, str) else value


def bad_body(reason: str):
    return refusal(400, f"Événements d'audit refusés : {reason}.", f"Audit events refused: {reason}.")


def not_a_server():
    return refusal(
        403,
        "Seul un serveur de projet en marche peut envoyer des événements d'audit, avec son "
        "propre jeton, depuis sa propre adresse.",
        "Only a running project server may send audit events, with its own token, from its "
        "own address.",
    )
