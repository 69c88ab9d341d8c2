"""Kernel websockets: each execution request traced with its sender, big outputs cut.

A notebook must not become a bulk copy of a table: one output message larger than the
policy's limit is replaced by a short notice, and output bytes of every kind (jupyter-server
counts only 'stream' messages, and forgets at each idle) are rate-limited over a window.
"""

from __future__ import annotations

import json
import time
from collections import deque

from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

from . import audit, messages, quota
from .state import guard

OUTPUT_TYPES = frozenset({"stream", "display_data", "execute_result", "update_display_data", "error"})
V1 = "v1.kernel.websocket.jupyter.org"
WINDOW_SECONDS = 3.0


class GuardedKernelConnection(ZMQChannelsWebsocketConnection):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        policy = guard().policy
        self.iopub_data_rate_limit = policy.iopub_data_rate_limit
        self.iopub_msg_rate_limit = policy.iopub_msg_rate_limit
        self._window: deque[tuple[float, int]] = deque()
        self._window_bytes = 0
        self._paused_notice_sent = False
        self._oom_kills = quota.oom_kills()

    # -- kernel deaths ----------------------------------------------------------------

    def on_kernel_restarted(self):
        """Say why when the kernel died of the tier's memory limit (the OOM killer picks
        kernels first: see quota.GuardedKernelManager)."""
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
            self._trace(incoming_msg)
        except Exception:  # a malformed message is the kernel's business, not the trail's
            self.log.debug("hdshub: untraceable message", exc_info=True)
        super().handle_incoming_message(incoming_msg)

    def _trace(self, ws_msg) -> None:
        if self.subprotocol == V1:
            _channel, parts = deserialize_msg_from_ws_v1(ws_msg)
            header = self.session.unpack(parts[0])
            if header.get("msg_type") != "execute_request":
                return
            content = self.session.unpack(parts[3])
        else:
            msg = json.loads(ws_msg)
            header = msg.get("header") or {}
            if header.get("msg_type") != "execute_request":
                return
            content = msg.get("content") or {}
        handler = self.websocket_handler
        guard().audit.record(
            audit.user_name(handler.current_user), "execute", f"kernel/{self.kernel_id}",
            client_ip=audit.client_ip(handler.request), **audit.code_event(str(content.get("code", ""))))

    # -- kernel -> browser ------------------------------------------------------------

    def handle_outgoing_message(self, stream, outgoing_msg) -> None:
        channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
        if channel == "iopub":
            _, parts = self.session.feed_identities(outgoing_msg)
            header = self.session.unpack(parts[1])
            if header.get("msg_type") in OUTPUT_TYPES:
                size = sum(len(p) for p in parts[1:])
                parent = self.session.unpack(parts[2])
                if self._over_limits(size, parent):
                    return
        super().handle_outgoing_message(stream, outgoing_msg)

    def _over_limits(self, size: int, parent: dict) -> bool:
        policy = guard().policy
        if size > policy.output_max_message_bytes:
            notice = messages.refusal("output-cut", size=messages.human_size(size),
                                      limit=messages.human_size(policy.output_max_message_bytes))
            self.write_stderr(notice.text, parent)
            self._record_cut("output-cut", size)
            return True
        now = time.monotonic()
        while self._window and self._window[0][0] < now - WINDOW_SECONDS:
            self._window_bytes -= self._window.popleft()[1]
        if self._window_bytes + size > policy.iopub_data_rate_limit * WINDOW_SECONDS:
            if not self._paused_notice_sent:
                notice = messages.refusal("output-rate",
                                          limit=messages.human_size(policy.iopub_data_rate_limit))
                self.write_stderr(notice.text, parent)
                self._record_cut("output-rate", size)
                self._paused_notice_sent = True
            return True
        self._paused_notice_sent = False
        self._window.append((now, size))
        self._window_bytes += size
        return False

    def _record_cut(self, reason: str, size: int) -> None:
        handler = self.websocket_handler
        guard().audit.record(
            audit.user_name(handler.current_user), "output", f"kernel/{self.kernel_id}",
            outcome="refused", reason=reason, size=size, client_ip=audit.client_ip(handler.request))
