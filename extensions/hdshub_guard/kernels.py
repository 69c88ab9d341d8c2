"""Kernel websockets: each execution request traced with its sender, every kernel message held
to the output budget.

A notebook must not become a bulk copy of a table, and it is the kernel (that is, the user's
code) that writes every message the browser receives, on every channel: outputs, but also
replies (a traceback in an execute_reply, user_expressions results, inspect_reply), comm
messages and input requests. Each of them is held to the policy's budget (OutputBudget): one
message larger than the limit, or bytes beyond the rate allowed over a window, do not reach
the browser. jupyter-server's own limits count only iopub 'stream' bytes and forget at each
idle.

What happens to a message over the budget depends on whether the browser waits for it:
- a reply to a request this websocket sent, the status that ends that request and an input
  request arrive rebuilt by the guard (cut_content) from the request's own header: the
  frontend never hangs, and of what the kernel wrote only the message's kind and protocol
  states get through, never its text;
- everything else is dropped, and the user is told once in the cell (FR/EN).
Each cut is recorded in the audit trail as a refusal.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque

from jupyter_client.jsonutil import json_default
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

from . import audit, messages, quota
from .state import guard

V1 = "v1.kernel.websocket.jupyter.org"
WINDOW_SECONDS = 3.0
#: Requests of one websocket remembered until answered (replies and idle status); older ones
#: are forgotten first (a request never answered must not grow the memory).
WAITING_MAX = 1000
#: The header fields of a request kept to answer it (JupyterLab matches replies on them).
HEADER_FIELDS = ("msg_id", "msg_type", "session", "username", "date", "version", "subshell_id")

#: Every message type a browser may send a kernel (Jupyter messaging protocol 5.5), except
#: debug_request: the debugger reads any file ('source') and any variable, outside the
#: execution requests the trail records and the output budget.
NOTEBOOK_MESSAGE_TYPES = (
    "execute_request", "inspect_request", "complete_request", "history_request",
    "is_complete_request", "comm_info_request", "kernel_info_request",
    "comm_open", "comm_msg", "comm_close",
    "shutdown_request", "interrupt_request",
    "create_subshell_request", "delete_subshell_request", "list_subshell_request",
    "input_reply",
)


class OutputBudget:
    """The policy's output limits for one connection: a cap per message, and a byte rate over
    a sliding window. Also remembers whether the user was told, to tell once per pause."""

    def __init__(self, max_message_bytes: int, bytes_per_second: int,
                 window: float = WINDOW_SECONDS, clock=time.monotonic):
        self.max_message_bytes = max_message_bytes
        self.window_bytes = bytes_per_second * window
        self.window = window
        self.clock = clock
        self._sent: deque[tuple[float, int]] = deque()
        self._sent_bytes = 0
        self._told: set[str] = set()

    def judge(self, size: int) -> str | None:
        """None when a message of `size` bytes may go (it is then counted), else why not:
        'cut' (larger than a message may be) or 'rate' (the window's bytes are spent)."""
        if size > self.max_message_bytes:
            return "cut"
        now = self.clock()
        while self._sent and self._sent[0][0] <= now - self.window:
            self._sent_bytes -= self._sent.popleft()[1]
        if self._sent_bytes + size > self.window_bytes:
            return "rate"
        self._told.clear()
        self._sent.append((now, size))
        self._sent_bytes += size
        return None

    def first_time(self, why: str) -> bool:
        """Whether `why` was not told since output last flowed (and now counts as told)."""
        if why in self._told:
            return False
        self._told.add(why)
        return True


def cut_content(msg_type: str, content: dict, notice: str, kernel_info: dict | None = None) -> dict:
    """The content of a message the browser waits for, rebuilt without the kernel's text: the
    protocol's states only, and the notice where the user will read it."""
    if msg_type == "status":  # only an idle status is waited for
        return {"execution_state": "idle"}
    if msg_type == "input_request":
        return {"prompt": f"{notice} > ", "password": content.get("password") is True}
    if msg_type == "kernel_info_reply" and kernel_info is not None:
        return kernel_info  # the one this websocket already received within the budget
    failed = content.get("status") == "error"
    if msg_type == "execute_reply":
        count = content.get("execution_count")
        cut = {"status": "error" if failed else "ok", "execution_count": count if type(count) is int else 0,
               "user_expressions": {}, "payload": []}
    elif msg_type == "inspect_reply":
        cut = {"status": "ok", "found": True, "data": {"text/plain": notice}, "metadata": {}}
    elif msg_type == "complete_reply":
        cut = {"status": "ok", "matches": [], "cursor_start": 0, "cursor_end": 0, "metadata": {}}
    elif msg_type == "is_complete_reply":
        cut = {"status": "unknown"}
    elif msg_type == "history_reply":
        cut = {"status": "ok", "history": []}
    elif msg_type == "comm_info_reply":
        cut = {"status": "ok", "comms": {}}
    elif msg_type == "shutdown_reply":
        cut = {"status": "ok", "restart": content.get("restart") is True}
    elif msg_type == "interrupt_reply":
        cut = {"status": "ok"}
    else:  # a reply whose fields the frontend needs (kernel_info, subshells): an error says why
        failed, cut = True, {"status": "error"}
    if failed:
        cut.update(ename="OutputCut", evalue=notice, traceback=[notice])
    return cut


def expressions_event(expressions: dict) -> dict:
    """user_expressions are code too (the kernel evaluates each one): kept like the code."""
    event = audit.code_event(json.dumps(expressions, sort_keys=True, ensure_ascii=False, default=str))
    return {"user_expressions": event["code"], "user_expressions_sha256": event["sha256"],
            "user_expressions_length": event["length"]}


class GuardedKernelConnection(ZMQChannelsWebsocketConnection):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        policy = guard().policy
        self.iopub_data_rate_limit = policy.iopub_data_rate_limit
        self.iopub_msg_rate_limit = policy.iopub_msg_rate_limit
        self._budget = OutputBudget(policy.output_max_message_bytes, policy.iopub_data_rate_limit)
        #: msg_id -> {"header": the request's header, "waits": {"reply", "idle"} still to come}
        self._waiting: OrderedDict[str, dict] = OrderedDict()
        self._kernel_info: dict | None = None
        self._oom_kills = quota.oom_kills()

    # -- kernel deaths ----------------------------------------------------------------

    def on_kernel_restarted(self):
        """Say why when the kernel died of the tier's memory limit (the OOM killer picks
        kernels first: see quota.GuardedKernel)."""
        kills = quota.oom_kills()
        if kills is not None and self._oom_kills is not None and kills > self._oom_kills:
            policy = guard().policy
            notice = messages.refusal("kernel-memory", tier=policy.tier,
                                      limit=messages.human_size(policy.memory_bytes))
            self.write_stderr(notice.text, {})
            handler = self.websocket_handler
            guard().audit.record(audit.user_name(handler.current_user), "kernel-memory",
                                 f"kernel/{self.kernel_id}", outcome="refused", reason="memory")
        self._oom_kills = kills
        super().on_kernel_restarted()

    # -- browser -> kernel ------------------------------------------------------------

    def handle_incoming_message(self, incoming_msg) -> None:
        try:
            header, content = self._read_incoming(incoming_msg)
            if header["msg_type"] == "execute_request":
                self._trace_execution(content())
        except Exception:
            # Read the way jupyter-server reads it: what cannot be read (or traced) here does
            # not reach the kernel.
            self.log.warning("hdshub: unreadable message from the browser, not forwarded")
            return
        self._expect(header)
        super().handle_incoming_message(incoming_msg)

    def _read_incoming(self, ws_msg):
        """(header, content()) of a browser message, as jupyter-server's parsing sees it."""
        if self.subprotocol == V1:
            _channel, parts = deserialize_msg_from_ws_v1(ws_msg)
            header = self.session.unpack(parts[0])
            return self._checked(header), lambda: self.session.unpack(parts[3])
        msg = deserialize_binary_message(ws_msg) if isinstance(ws_msg, bytes) else json.loads(ws_msg)
        content = msg.get("content") or {}
        return self._checked(msg.get("header") or {}), lambda: content

    @staticmethod
    def _checked(header) -> dict:
        if not isinstance(header, dict) or not isinstance(header.get("msg_type"), str):
            raise ValueError("a message header names its msg_type")
        return header

    def _trace_execution(self, content: dict) -> None:
        handler = self.websocket_handler
        details = audit.code_event(str(content.get("code", "")))
        if content.get("user_expressions"):
            details.update(expressions_event(content["user_expressions"]))
        guard().audit.record(audit.user_name(handler.current_user), "execute", f"kernel/{self.kernel_id}",
                             client_ip=audit.client_ip(handler.request), **details)

    def _expect(self, header: dict) -> None:
        """Remember a request until its reply and its idle status have gone to the browser."""
        msg_id = header.get("msg_id")
        if header["msg_type"].endswith("_request") and isinstance(msg_id, str):
            kept = {k: header[k] for k in HEADER_FIELDS if isinstance(header.get(k), str)}
            self._waiting[msg_id] = {"header": kept, "waits": {"reply", "idle"}}
            while len(self._waiting) > WAITING_MAX:
                self._waiting.popitem(last=False)

    # -- kernel -> browser ------------------------------------------------------------

    def handle_outgoing_message(self, stream, outgoing_msg) -> None:
        channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
        try:
            _, parts = self.session.feed_identities(outgoing_msg)
            size = sum(len(p) for p in parts[1:])
            header, parent = self.session.unpack(parts[1]), self.session.unpack(parts[2])
        except Exception:  # the kernel is the user's code: it may send anything
            self.log.warning("hdshub: unreadable message from kernel %s, not forwarded", self.kernel_id)
            return
        msg_type = header.get("msg_type") if isinstance(header, dict) else None
        parent_id = parent.get("msg_id") if isinstance(parent, dict) else None
        waiting = self._waiting.get(parent_id) if isinstance(parent_id, str) else None
        why = self._budget.judge(size)
        if why is None:
            if msg_type == "kernel_info_reply":
                self._kernel_info = self._content(parts)
            if waiting is not None:
                self._answered(waiting, parent, channel, msg_type, parts)
            super().handle_outgoing_message(stream, outgoing_msg)
            return
        notice = self._notice(why, size)
        if waiting is not None and self._answered(waiting, parent, channel, msg_type, parts):
            cut = cut_content(msg_type, self._content(parts), notice.text, self._kernel_info)
            self._send(channel, msg_type, cut, waiting["header"])
            if msg_type != "status":
                self._record_cut(notice.reason, size, channel, msg_type)
            return
        if why == "cut" or self._budget.first_time(why):
            self.write_stderr(notice.text, waiting["header"] if waiting else {})
            self._record_cut(notice.reason, size, channel, msg_type)

    def _answered(self, waiting: dict, parent: dict, channel, msg_type, parts) -> bool:
        """Whether this message is one the browser still waits for, to answer the request
        `waiting`: its first reply, its idle status, an input request before its reply.
        The request is forgotten once its reply and its idle status went to the browser."""
        waits = waiting["waits"]
        if not isinstance(msg_type, str):
            return False
        if channel in ("shell", "control") and msg_type.endswith("_reply"):
            expected, waits_for = "reply" in waits, "reply"
        elif channel == "iopub" and msg_type == "status":
            expected = "idle" in waits and self._content(parts).get("execution_state") == "idle"
            waits_for = "idle"
        elif channel == "stdin" and msg_type == "input_request":
            return "reply" in waits
        else:
            return False
        if expected:
            waits.discard(waits_for)
            if not waits:
                self._waiting.pop(parent["msg_id"], None)
        return expected

    def _content(self, parts) -> dict:
        try:
            content = self.session.unpack(parts[4])
        except Exception:
            return {}
        return content if isinstance(content, dict) else {}

    def _notice(self, why: str, size: int) -> messages.Refusal:
        policy = guard().policy
        if why == "cut":
            return messages.refusal("output-cut", size=messages.human_size(size),
                                    limit=messages.human_size(policy.output_max_message_bytes))
        return messages.refusal("output-rate", limit=messages.human_size(policy.iopub_data_rate_limit))

    def _send(self, channel: str, msg_type: str, content: dict, parent_header: dict) -> None:
        """A message made by the guard (header, metadata) to the browser, as write_stderr does."""
        msg = self.session.msg(msg_type, content=content, parent=parent_header)
        if self.subprotocol == V1:
            self.write_message(serialize_msg_to_ws_v1(msg, channel, self.session.pack), binary=True)
        else:
            msg["channel"] = channel
            self.write_message(json.dumps(msg, default=json_default))

    def _record_cut(self, reason: str, size: int, channel, msg_type) -> None:
        handler = self.websocket_handler
        guard().audit.record(
            audit.user_name(handler.current_user), "output", f"kernel/{self.kernel_id}",
            outcome="refused", reason=reason, size=size, channel=channel,
            msg_type=msg_type if isinstance(msg_type, str) else None,
            client_ip=audit.client_ip(handler.request))
