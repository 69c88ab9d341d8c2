"""What the browser receives from kernels and terminals, on every channel, in a real container.

The output budget (hdshub/defaults/egress.yaml, outputs) holds for every message a kernel
sends (replies, comm and stdin messages too, not only outputs) and for terminal output; the
kernel debugger, which reads any file and variable, is not reachable; terminal input and
every execution request (user_expressions included) reach the audit trail.

Each test goes through the hub's proxy and the server's real websockets, as JupyterLab does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid

import pytest
from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from .test_guard import DATA_FILE, EGRESS, kernel, raw_get, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.docker

LIMIT = EGRESS["outputs"]["max_message_bytes"]
BIG = LIMIT * 2


# -- clients --------------------------------------------------------------------------------

async def connect(hub, server, path: str, subprotocols=None):
    url = server["url"].replace("https://", "wss://") + path
    request = HTTPRequest(url, headers={"Authorization": f"token {server['token']}"},
                          ca_certs=hub.ca_file, request_timeout=60)
    return await websocket_connect(request, max_message_size=256 * 1024 * 1024,
                                   subprotocols=subprotocols)


V1 = "v1.kernel.websocket.jupyter.org"


class KernelSocket:
    """One kernel websocket: send on any channel, read every message with its size. JSON
    messages by default; JupyterLab's binary protocol with v1=True."""

    def __init__(self, connection, v1: bool):
        self.connection = connection
        self.v1 = v1
        self.session = uuid.uuid4().hex
        self.seen: list[dict] = []

    @classmethod
    async def open(cls, hub, server, kernel_id: str, v1: bool = False) -> KernelSocket:
        connection = await connect(hub, server, f"/api/kernels/{kernel_id}/channels",
                                   subprotocols=[V1] if v1 else None)
        assert connection.selected_subprotocol == (V1 if v1 else None)
        return cls(connection, v1)

    def send(self, channel: str, msg_type: str, content: dict, parent: dict | None = None) -> str:
        msg_id = uuid.uuid4().hex
        msg = {"header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session,
                          "username": "test", "version": "5.3", "date": ""},
               "parent_header": parent or {}, "metadata": {}, "content": content}
        if self.v1:
            parts = [json.dumps(msg[key]).encode() for key in ("header", "parent_header", "metadata", "content")]
            self.connection.write_message(serialize_msg_to_ws_v1(parts, channel), binary=True)
        else:
            self.connection.write_message(json.dumps({"channel": channel, "buffers": [], **msg}))
        return msg_id

    def parse(self, raw) -> dict:
        if not self.v1:
            return json.loads(raw)
        channel, parts = deserialize_msg_from_ws_v1(raw)
        header, parent, metadata, content = (json.loads(part) for part in parts[:4])
        return {"channel": channel, "header": header, "msg_type": header["msg_type"],
                "parent_header": parent, "metadata": metadata, "content": content}

    def execute(self, code: str, **content) -> str:
        return self.send("shell", "execute_request", {
            "code": code, "silent": False, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True, **content})

    async def read_until(self, done, timeout: float = 180) -> list[dict]:
        """Messages read until done(msg) (that one included)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        read: list[dict] = []
        while loop.time() < deadline:
            raw = await asyncio.wait_for(self.connection.read_message(), deadline - loop.time())
            assert raw is not None, f"the server closed the websocket; last: {brief(read[-3:])}"
            msg = self.parse(raw)
            msg["size"] = len(raw)
            read.append(msg)
            self.seen.append(msg)
            if done(msg):
                return read
        raise AssertionError(f"not done within {timeout}s; last: {brief(read[-3:])}")

    async def run(self, code: str, **content) -> list[dict]:
        """Execute code; every message until both its reply and its idle status are in."""
        msg_id = self.execute(code, **content)
        return await self.until_finished(msg_id)

    async def until_finished(self, msg_id: str) -> list[dict]:
        pending = {"reply", "idle"}

        def done(msg):
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                if msg["msg_type"].endswith("_reply"):
                    pending.discard("reply")
                if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
                    pending.discard("idle")
            return not pending

        return await self.read_until(done)


def brief(messages: list[dict]) -> list[tuple]:
    return [(m.get("channel"), m.get("msg_type"), m.get("size")) for m in messages]


def answering(messages: list[dict], msg_id: str, msg_type: str) -> dict:
    found = [m for m in messages if m["msg_type"] == msg_type
             and m.get("parent_header", {}).get("msg_id") == msg_id]
    assert len(found) == 1, (msg_type, brief(messages))
    return found[0]


def kernel_session(hub, server, kernel_id, scenario, v1: bool = False):
    async def main():
        socket = await KernelSocket.open(hub, server, kernel_id, v1)
        try:
            return await scenario(socket)
        finally:
            socket.connection.close()

    return asyncio.run(main())


def trail_events(hub, server, wanted, timeout: float = 90) -> list[dict]:
    """The project's audit events, once wanted(events) holds (the guard sends them each second)."""
    trail = hub.state_dir / "audit" / f"{server['slug']}.jsonl"
    deadline = time.monotonic() + timeout
    events: list[dict] = []
    while time.monotonic() < deadline:
        events = [json.loads(line) for line in trail.read_text().splitlines()] if trail.exists() else []
        if wanted(events):
            return events
        time.sleep(0.5)
    raise AssertionError(f"audit events not found; last ones: {events[-5:]}")


# -- every kernel message held to the budget --------------------------------------------------

@pytest.mark.parametrize("v1", [False, True], ids=["json", "v1"])
def test_a_huge_exception_arrives_cut_and_the_reply_still_comes(hub, server, kernel, v1):
    async def scenario(socket):
        return await socket.run(f"raise ValueError('x' * {BIG})")

    messages = kernel_session(hub, server, kernel, scenario, v1)
    assert max(m["size"] for m in messages) < LIMIT, brief(messages)
    reply = next(m for m in messages if m["msg_type"] == "execute_reply")
    assert reply["content"]["status"] == "error"
    assert "Sortie coupée" in json.dumps(reply["content"], ensure_ascii=False)
    assert "x" * 1000 not in json.dumps(messages)


def test_user_expressions_are_cut_and_recorded(hub, server, kernel):
    expression = f"'y' * {BIG}"

    async def scenario(socket):
        return await socket.run("pass", user_expressions={"table": expression})

    messages = kernel_session(hub, server, kernel, scenario)
    reply = next(m for m in messages if m["msg_type"] == "execute_reply")
    assert reply["size"] < LIMIT, brief(messages)
    assert "y" * 1000 not in json.dumps(reply)

    def recorded(events):
        return any(e["action"] == "execute" and expression in e["details"].get("user_expressions", "")
                   for e in events) and any(
            e["action"] == "output" and e["outcome"] == "refused"
            and e["details"].get("msg_type") == "execute_reply" for e in events)

    events = trail_events(hub, server, recorded)
    execution = next(e for e in events if e["action"] == "execute"
                     and expression in e["details"].get("user_expressions", ""))
    assert execution["user"] == "alice" and execution["source_ip"]


def test_inspect_replies_are_cut(hub, server, kernel):
    async def scenario(socket):
        await socket.run(f"def table(): pass\ntable.__doc__ = 'z' * {BIG}")
        msg_id = socket.send("shell", "inspect_request", {"code": "table", "cursor_pos": 5, "detail_level": 0})
        return msg_id, await socket.until_finished(msg_id)

    msg_id, messages = kernel_session(hub, server, kernel, scenario)
    reply = answering(messages, msg_id, "inspect_reply")
    assert reply["size"] < LIMIT and "z" * 1000 not in json.dumps(reply)
    assert "Sortie coupée" in json.dumps(reply["content"], ensure_ascii=False)


def test_comm_messages_are_held_to_the_size_cap_and_the_rate(hub, server, kernel):
    """A widget-like comm carrying a table: one huge comm_open, then a flood of comm_msg
    each under the cap but far over the rate."""
    count, each = 200, 200_000  # 40 MB, under jupyter-server's own message-rate limit
    code = (f"from comm import create_comm\n"
            f"c = create_comm(target_name='hdshub-test', data={{'rows': 'c' * {BIG}}})\n"
            f"for i in range({count}):\n"
            f"    c.send({{'rows': 'd' * {each}}})\n")

    async def scenario(socket):
        return await socket.run(code)

    messages = kernel_session(hub, server, kernel, scenario)
    assert max(m["size"] for m in messages) < LIMIT, brief(messages)
    comm_bytes = sum(m["size"] for m in messages if m["msg_type"] == "comm_msg")
    assert comm_bytes < count * each / 2, comm_bytes
    reply = next(m for m in messages if m["msg_type"] == "execute_reply")
    assert reply["content"]["status"] == "ok"  # the protocol holds: the cell finishes


def test_input_requests_are_cut_and_still_answerable(hub, server, kernel):
    async def scenario(socket):
        msg_id = socket.execute(f"answer = input('p' * {BIG})\nprint('got', answer)", allow_stdin=True)
        read = await socket.read_until(lambda m: m["msg_type"] == "input_request")
        request = read[-1]
        socket.send("stdin", "input_reply", {"value": "oui"}, parent=request["header"])
        return request, await socket.until_finished(msg_id)

    request, messages = kernel_session(hub, server, kernel, scenario)
    assert request["channel"] == "stdin" and request["size"] < LIMIT
    assert "p" * 1000 not in request["content"]["prompt"]
    out = "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
    assert "got oui" in out


# -- the debugger -----------------------------------------------------------------------------

def test_the_kernel_debugger_is_unreachable(hub, server, kernel):
    """debugpy reads any file ('source') and any variable: no debug request reaches the kernel.
    A kernel_info_request sent after them on the same channel is answered in order."""
    async def scenario(socket):
        await socket.run(f"rows = open('data/{DATA_FILE}').read()")
        requests = [
            {"seq": 1, "type": "request", "command": "initialize",
             "arguments": {"clientID": "test", "adapterID": "", "pathFormat": "path"}},
            {"seq": 2, "type": "request", "command": "inspectVariables", "arguments": {}},
            {"seq": 3, "type": "request", "command": "source",
             "arguments": {"source": {"path": f"/home/jovyan/data/{DATA_FILE}"}}},
        ]
        for request in requests:
            socket.send("control", "debug_request", request)
        msg_id = socket.send("control", "kernel_info_request", {})
        return await socket.read_until(lambda m: m["msg_type"] == "kernel_info_reply"
                                       and m["parent_header"].get("msg_id") == msg_id)

    messages = kernel_session(hub, server, kernel, scenario)
    assert not [m for m in messages if m["msg_type"].startswith("debug_")], brief(messages)
    assert "patient_id" not in json.dumps(messages)


def test_lab_page_disables_the_debugger(server):
    page = raw_get(server, "/lab")
    assert page.status_code == 200
    assert "@jupyterlab/debugger-extension" in page.text


# -- terminals --------------------------------------------------------------------------------

class TerminalSocket:
    def __init__(self, connection):
        self.connection = connection
        self.stdout = ""

    @classmethod
    async def open(cls, hub, server, name: str) -> TerminalSocket:
        return cls(await connect(hub, server, f"/terminals/websocket/{name}"))

    def type(self, text: str) -> None:
        self.connection.write_message(json.dumps(["stdin", text]))

    async def wait_for(self, text: str, timeout: float = 180) -> None:
        """Read output until `text` is in it, typing `echo` of it now and then: output is
        dropped while the budget is spent, so one echo might never arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        marker, _, value = text.partition("=")
        while text not in self.stdout:
            assert loop.time() < deadline, f"{text!r} never came; last output: {self.stdout[-500:]!r}"
            # The shell prints the value, the echo of what was typed shows the expression.
            self.type(f"echo {marker}=$(({value} - 1 + 1))\r")
            try:
                while True:
                    raw = await asyncio.wait_for(self.connection.read_message(), 1.0)
                    assert raw is not None, "the server closed the terminal websocket"
                    kind, *data = json.loads(raw)
                    if kind == "stdout":
                        self.stdout += data[0]
                    if text in self.stdout:
                        return
            except asyncio.TimeoutError:
                continue


def test_terminal_output_is_held_to_the_budget_and_input_recorded(hub, server):
    session, url = server["session"], server["url"]
    created = session.post(f"{url}/api/terminals", timeout=30)
    assert created.status_code == 200, created.text
    name = created.json()["name"]
    line = "patient,0123456789,abcdefghijklmnopqrstuvwxyz"
    count = 1_500_000  # about 70 MB through the terminal
    command = f"cat data/{DATA_FILE} | head -n 3 && yes '{line}' | head -n {count}"

    async def scenario():
        terminal = await TerminalSocket.open(hub, server, name)
        try:
            await terminal.wait_for("READY=1")
            terminal.type(command + "\r")
            await terminal.wait_for("DONE=42")
            return terminal.stdout
        finally:
            terminal.connection.close()

    try:
        stdout = asyncio.run(scenario())
    finally:
        session.delete(f"{url}/api/terminals/{name}", timeout=30)
    assert "Sortie du terminal suspendue" in stdout and "Terminal output paused" in stdout
    assert stdout.count(line) < count / 2, stdout.count(line)
    assert "patient_id" in stdout  # small outputs still flow: the budget is a rate

    digest = hashlib.sha256((command + "\r").encode()).hexdigest()

    def recorded(events):
        return any(e["action"] == "execute" and e["details"].get("sha256") == digest for e in events) and any(
            e["action"] == "output" and e["target"] == f"terminal/{name}" for e in events)

    events = trail_events(hub, server, recorded)
    typed = next(e for e in events if e["action"] == "execute" and e["details"].get("sha256") == digest)
    assert typed["target"] == f"terminal/{name}" and typed["user"] == "alice" and typed["source_ip"]
    assert typed["details"]["code"] == command + "\r"
    cut = next(e for e in events if e["action"] == "output" and e["target"] == f"terminal/{name}")
    assert cut["outcome"] == "refused" and cut["details"]["reason"] == "terminal-output-rate"
