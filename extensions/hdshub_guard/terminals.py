"""Terminal websockets: what is typed goes into the audit trail, what is shown keeps to the
output budget.

A terminal reads raw data as easily as a kernel (`cat data/x.csv`), and terminado streams
everything the shell prints to the browser. The same budget as kernel messages holds
(kernels.OutputBudget, from the policy's outputs section: max_message_bytes per message and
iopub_data_rate_limit bytes per second, a kernel's and a terminal's output being the same
thing to the browser); what goes over it is dropped, and the user is told once per pause in
French and English. Input is recorded per line (up to each Enter, or every CODE_EXCERPT
characters without one), like execution requests: sha256, length, an excerpt.
"""

from __future__ import annotations

import json

from jupyter_server_terminals.handlers import TermSocket

from . import audit, messages
from .kernels import OutputBudget
from .state import guard


class GuardedTermSocket(TermSocket):
    """jupyter_server_terminals' websocket with the budget on output and input traced."""

    def initialize(self, name, term_manager, **kwargs):
        super().initialize(name, term_manager, **kwargs)
        policy = guard().policy
        self._budget = OutputBudget(policy.output_max_message_bytes, policy.iopub_data_rate_limit)
        self._typed = ""

    # -- shell -> browser -------------------------------------------------------------
    # terminado calls on_pty_read for each read of the pty, and once with the whole
    # scrollback (up to ~64 MB) when a browser reconnects: both go through the budget.

    def on_pty_read(self, text: str) -> None:
        size = len(text.encode("utf-8", "replace"))
        why = self._budget.judge(size)
        if why is None:
            super().on_pty_read(text)
        elif self._budget.first_time(why):
            notice = self._notice(why, size)
            self.send_json_message(["stdout", f"\r\n[hdshub] {notice.text}\r\n"])
            self._record("output", outcome="refused", reason=notice.reason, size=size)

    def _notice(self, why: str, size: int) -> messages.Refusal:
        policy = guard().policy
        if why == "cut":
            return messages.refusal("terminal-output-cut", size=messages.human_size(size),
                                    limit=messages.human_size(policy.output_max_message_bytes))
        return messages.refusal("terminal-output-rate",
                                limit=messages.human_size(policy.iopub_data_rate_limit))

    # -- browser -> shell -------------------------------------------------------------

    async def on_message(self, message) -> None:
        try:
            command = json.loads(message)
            if command[0] == "stdin" and isinstance(command[1], str):
                self._trace_input(command[1])
        except Exception:  # terminado refuses it too
            self.log.debug("hdshub: untraceable terminal message", exc_info=True)
        await super().on_message(message)

    def _trace_input(self, text: str) -> None:
        self._typed += text
        end = max(self._typed.rfind("\r"), self._typed.rfind("\n"))
        if end >= 0:
            line, self._typed = self._typed[:end + 1], self._typed[end + 1:]
            self._record_input(line)
        while len(self._typed) >= audit.CODE_EXCERPT:  # a paste with no line end
            line, self._typed = self._typed[:audit.CODE_EXCERPT], self._typed[audit.CODE_EXCERPT:]
            self._record_input(line)

    def _record_input(self, text: str) -> None:
        self._record("execute", **audit.code_event(text))

    def on_close(self) -> None:
        if self._typed:
            self._record_input(self._typed)
            self._typed = ""
        super().on_close()

    def _record(self, action: str, **details) -> None:
        guard().audit.record(audit.user_name(self.current_user), action, f"terminal/{self.term_name}",
                             client_ip=audit.client_ip(self.request), **details)


def install(serverapp) -> None:
    """Serve terminal websockets with GuardedTermSocket.

    jupyter_server_terminals registers its TermSocket in the web application's router when it
    loads, with no setting to choose the class (its terminal_manager_class would see output
    but not who typed what), and extensions load in name order, hdshub_guard first. So, once
    every extension has loaded (the guard's start hook), the rule naming TermSocket gets our
    subclass in its place, same route, same arguments: no module is monkeypatched, and
    tests/integration/test_guard_channels.py goes through the real route. A terminal must be
    created by a request before its websocket opens, and this runs in the server's first
    event-loop turn, so no terminal is open before. With terminals on and no such rule, the
    server stops (an exception in a start hook would only be logged).
    """
    web_app = serverapp.web_app
    if not web_app.settings.get("terminals_available"):
        return
    if not _swap(web_app.default_router, TermSocket, GuardedTermSocket):
        serverapp.log.critical("hdshub_guard: jupyter_server_terminals' websocket route was not "
                               "found: terminals would be unguarded; stopping")
        serverapp.stop()


def _swap(router, old: type, new: type) -> int:
    """Replace `old` by `new` as the target of every rule under `router`; how many."""
    swapped = 0
    for rule in getattr(router, "rules", ()):
        if rule.target is old:
            rule.target = new
            swapped += 1
        else:
            swapped += _swap(rule.target, old, new)
    return swapped
