"""Orphaned processes reaped when the server is the container's PID 1.

The server runs as PID 1 on purpose (hub_config/hdshub/containers.py): kernels then cannot
SIGKILL or SIGSTOP it, and no separate init holds the server's environment where kernels
could read it. A PID 1 inherits every orphan, though: a process a kernel left behind stays
a zombie until PID 1 waits for it, and zombies count against the tier's process limit.

Zombies are reaped only when a whole period has passed and they are still unreaped: a
child the server waits for itself (a kernel, a terminal, a subprocess) is reaped by its
own waiter at once, so its exit status is never taken away from it.
"""

from __future__ import annotations

import os

from tornado.ioloop import PeriodicCallback

PERIOD_SECONDS = 10


def zombie_children(proc: str = "/proc") -> set[int]:
    """Pids of this process's children that have exited and were not waited for."""
    me, found = os.getpid(), set()
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2:].split()
        if fields[:1] == [b"Z"] and int(fields[1]) == me:
            found.add(int(entry))
    return found


class OrphanReaper:
    def __init__(self):
        self.seen: set[int] = set()
        self.reaped = 0

    def sweep(self) -> None:
        zombies = zombie_children()
        for pid in zombies & self.seen:
            try:
                os.waitpid(pid, os.WNOHANG)
                self.reaped += 1
            except ChildProcessError:
                pass  # its own waiter got it first
        self.seen = zombies - self.seen


def start_if_init(log) -> OrphanReaper | None:
    if os.getpid() != 1:
        return None
    reaper = OrphanReaper()
    PeriodicCallback(reaper.sweep, PERIOD_SECONDS * 1000).start()
    log.info("hdshub_guard: PID 1, reaping orphaned processes every %s s", PERIOD_SECONDS)
    return reaper
