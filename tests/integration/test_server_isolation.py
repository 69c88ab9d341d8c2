"""A hostile kernel against its own server: it may not signal, trace, read or replace it.

Kernels run the user's code under the server's uid. The server is the container's PID 1
(containers.hardening) and non-dumpable (hdshub_guard/isolation.py), so what the same uid
could otherwise do is tried here for real, from a kernel of a running project server.
"""

from __future__ import annotations

import time

import pytest

from tests.support.kernel_client import execute

from .test_guard import kernel, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.docker

ATTACKS = r'''
import ctypes, os, signal, socket
libc = ctypes.CDLL(None, use_errno=True)
print("parent", os.getppid())
for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
    if pid == os.getpid():
        continue
    for what in ("environ", "mem"):
        try:
            with open(f"/proc/{pid}/{what}", "rb") as f:
                data = f.read(1 << 20)
            print("READ", what, pid, TOKEN.encode() in data)
        except OSError as e:
            print("denied", what, pid, type(e).__name__)
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
if libc.ptrace(PTRACE_ATTACH, 1, None, None) == 0:
    print("TRACED"); libc.ptrace(PTRACE_DETACH, 1, None, None)
else:
    print("ptrace", os.strerror(ctypes.get_errno()))
s = socket.socket()
try:
    s.bind(("0.0.0.0", 8888)); s.listen(); print("BOUND 8888")
except OSError as e:
    print("bind", e.errno)
for sig in (signal.SIGSTOP, signal.SIGKILL):
    os.kill(1, sig)  # the kernel may send it; PID 1 has no handler for it, so it never arrives
print("signals sent")
'''


def test_a_kernel_cannot_read_trace_replace_or_kill_its_server(hub, server, kernel):
    token = next(e.split("=", 1)[1] for e in server["container"].attrs["Config"]["Env"]
                 if e.startswith("JUPYTERHUB_API_TOKEN="))
    out = execute(server["url"], server["token"], hub.ca_file, kernel,
                  f"TOKEN = {token!r}\n" + ATTACKS).stdout
    assert "parent 1" in out, out  # the server is PID 1: no init holds its environment
    assert "READ environ 1" not in out and "READ mem 1" not in out, out
    assert "denied environ 1 PermissionError" in out, out
    assert "True" not in out, out  # no process's memory or environment shows the token
    assert "TRACED" not in out and "ptrace Operation not permitted" in out, out
    assert "BOUND 8888" not in out and "bind 98" in out, out  # EADDRINUSE
    assert "signals sent" in out, out
    time.sleep(1)
    # Neither SIGSTOP nor SIGKILL reached the server: it still answers, through the proxy.
    status = server["session"].get(f"{server['url']}/api/status", timeout=10)
    assert status.status_code == 200, status.text
    after = execute(server["url"], server["token"], hub.ca_file, kernel, "print(6 * 7)")
    assert after.stdout.strip() == "42"


ORPHAN = r'''
import os, time
child = os.fork()
if child == 0:
    if os.fork() == 0:          # the grandchild outlives its parent: PID 1 inherits it
        time.sleep(0.5)
        os._exit(0)
    os._exit(0)
os.waitpid(child, 0)
time.sleep(1)
pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
def zombie_of_init(pid):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] == "Z" and fields[1] == "1"
print("zombies", sorted(p for p in pids if zombie_of_init(p)))
'''


def test_orphans_a_kernel_leaves_are_reaped(hub, server, kernel):
    """PID 1 inherits orphans; left unreaped they would use up the tier's process limit."""
    first = execute(server["url"], server["token"], hub.ca_file, kernel, ORPHAN).stdout
    left = eval(first.split("zombies", 1)[1])
    assert left, first  # the grandchild is a zombie waiting for PID 1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        code, output = server["container"].exec_run(["sh", "-c", " ".join(
            f"test -e /proc/{pid} && echo {pid};" for pid in left)], user="1000")
        if not output.strip():
            return
        time.sleep(2)
    pytest.fail(f"zombies {output.decode().split()} were not reaped in 60 s")
