"""Run code in a project server's kernel through its real websocket, as JupyterLab does.

Going through the server (and not `docker exec`) is the point: the guard sees the request,
traces it and limits what comes back.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


@dataclass
class Execution:
    outputs: list[dict] = field(default_factory=list)  # iopub messages answering the request

    @property
    def stdout(self) -> str:
        return "".join(m["content"]["text"] for m in self.outputs
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(m["content"]["text"] for m in self.outputs
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")

    @property
    def largest_message(self) -> int:
        return max((m["size"] for m in self.outputs), default=0)


def start_kernel(session: requests.Session, server_url: str) -> str:
    reply = session.post(f"{server_url}/api/kernels", json={"name": "python3"}, timeout=60)
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def execute(server_url: str, token: str, ca_file: str, kernel_id: str, code: str,
            timeout: float = 60) -> Execution:
    return asyncio.run(_execute(server_url, token, ca_file, kernel_id, code, timeout))


async def _execute(server_url, token, ca_file, kernel_id, code, timeout) -> Execution:
    url = server_url.replace("https://", "wss://") + f"/api/kernels/{kernel_id}/channels"
    request = HTTPRequest(url, headers={"Authorization": f"token {token}"}, ca_certs=ca_file,
                          request_timeout=timeout)
    connection = await websocket_connect(request, max_message_size=64 * 1024 * 1024)
    msg_id = uuid.uuid4().hex
    connection.write_message(json.dumps({
        "channel": "shell",
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex,
                   "username": "test", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    result = Execution()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while loop.time() < deadline:
            raw = await asyncio.wait_for(connection.read_message(), deadline - loop.time())
            if raw is None:
                break
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id or msg.get("channel") != "iopub":
                continue
            msg["size"] = len(raw)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return result
            result.outputs.append(msg)
        raise AssertionError(f"no idle status within {timeout}s; got {result.outputs[-3:]}")
    finally:
        connection.close()


def listen(server_url: str, token: str, ca_file: str, kernel_id: str, code: str,
           until, timeout: float = 120) -> list[dict]:
    """Send `code`, then collect every message (whatever its parent) until `until(msg)`."""
    return asyncio.run(_listen(server_url, token, ca_file, kernel_id, code, until, timeout))


async def _listen(server_url, token, ca_file, kernel_id, code, until, timeout) -> list[dict]:
    url = server_url.replace("https://", "wss://") + f"/api/kernels/{kernel_id}/channels"
    request = HTTPRequest(url, headers={"Authorization": f"token {token}"}, ca_certs=ca_file,
                          request_timeout=timeout)
    connection = await websocket_connect(request, max_message_size=64 * 1024 * 1024)
    connection.write_message(json.dumps({
        "channel": "shell",
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "session": uuid.uuid4().hex,
                   "username": "test", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    seen: list[dict] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while loop.time() < deadline:
            raw = await asyncio.wait_for(connection.read_message(), deadline - loop.time())
            if raw is None:
                break
            msg = json.loads(raw)
            seen.append(msg)
            if until(msg):
                return seen
        raise AssertionError(f"condition not met within {timeout}s; last: {seen[-3:]}")
    finally:
        connection.close()
