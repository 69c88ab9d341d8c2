"""Work lives in project volumes: shared between members, kept across stops and hub restarts."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from .conftest import start_server, stop_server, wait_ready

pytestmark = pytest.mark.docker


def contents(hub, session, user, slug, path):
    return f"{hub.public_url}/user/{user}/{slug}/api/contents/{path}"


def test_work_is_shared_and_survives_stop_and_hub_restart(hub, new_project):
    slug = new_project({"alice": "analyst", "bob": "analyst"})
    alice = hub.as_user(hub.user_token("alice"))
    bob = hub.as_user(hub.user_token("bob"))
    text = "résultat intermédiaire — 42\n"

    assert start_server(hub, alice, "alice", slug).status_code in (201, 202)
    wait_ready(hub, alice, "alice", slug)
    reply = alice.put(contents(hub, alice, "alice", slug, "work/note.txt"),
                      json={"type": "file", "format": "text", "content": text}, timeout=30)
    assert reply.status_code in (200, 201), reply.text

    # A second member of the project sees the same work area.
    assert start_server(hub, bob, "bob", slug).status_code in (201, 202)
    wait_ready(hub, bob, "bob", slug)
    seen = bob.get(contents(hub, bob, "bob", slug, "work/note.txt"), timeout=30).json()
    assert seen["content"] == text
    stop_server(hub, bob, "bob", slug)

    # Stop, restart the hub, start again: the file is still there.
    stop_server(hub, alice, "alice", slug)
    hub.restart()
    assert start_server(hub, alice, "alice", slug).status_code in (201, 202)
    wait_ready(hub, alice, "alice", slug)
    again = alice.get(contents(hub, alice, "alice", slug, "work/note.txt"), timeout=30).json()
    assert again["content"] == text
    stop_server(hub, alice, "alice", slug)


def test_a_running_server_survives_a_hub_restart(hub, new_project):
    slug = new_project({"alice": "analyst"})
    alice = hub.as_user(hub.user_token("alice"))
    assert start_server(hub, alice, "alice", slug).status_code in (201, 202)
    wait_ready(hub, alice, "alice", slug)
    hub.restart()
    # The hub checks the servers it finds for up to init_spawners_timeout, serving meanwhile:
    # the server is pending a moment, then ready (not stopped, not gone).
    wait_ready(hub, alice, "alice", slug, timeout=60)
    assert alice.get(f"{hub.public_url}/user/alice/{slug}/api/status", timeout=30).status_code == 200
    stop_server(hub, alice, "alice", slug)


def sigint_ignored(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    ignored = next(line for line in status if line.startswith("SigIgn:"))  # a hexadecimal mask
    return bool(int(ignored.split()[1], 16) & (1 << (signal.SIGINT - 1)))


def test_a_hub_started_in_the_background_still_interrupts_its_services(hub):
    """`bin/up &` in a script (a shell without job control) starts `up` ignoring SIGINT, and
    an ignored signal is inherited: the hub's services (idle culler, usage sampler) would
    ignore the SIGINT JupyterHub stops them with, and each stop would wait out JupyterHub's
    timeouts (a minute, measured by hand). `hdshub up` gives the hub the default back."""
    hub.stop()
    hub.start(ignoring_sigint=True)
    hub_pid = int((hub.state_dir / "jupyterhub.pid").read_text())
    services = {int(entry.name): command for entry in Path("/proc").glob("[0-9]*")
                if _parent(entry) == hub_pid
                and (b"hdshub.usage" in (command := entry.joinpath("cmdline").read_bytes())
                     or b"idle_culler" in command)}
    assert len(services) == 2, services
    assert [pid for pid in services if sigint_ignored(pid)] == []


def _parent(entry: Path) -> int | None:
    try:  # "pid (name) state ppid ...", the name may hold spaces
        return int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
