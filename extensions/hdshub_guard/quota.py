"""The project's tier, enforced inside the server: storage, kernels, idle time, age, memory.

Storage is measured on the volumes themselves (work/ and outputs/, shared by every member's
server), never taken from the client. A write that would go over the quota is refused
before anything is written, so nothing already saved is lost.
"""

from __future__ import annotations

import os
import time

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager, ServerKernelManager
from tornado import web
from traitlets import default

from . import messages
from .state import guard

MEASURED_FOLDERS = ("work", "outputs")
#: How long a measurement is trusted; writes made through this server are added meanwhile.
MEASURE_SECONDS = 5.0
OOM_SCORE_ADJ = "1000"
#: Where the container's cgroup counts out-of-memory kills (cgroup v2, then v1).
OOM_COUNTERS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")


class StorageMeter:
    def __init__(self, root: str):
        self.root = root
        self._used: int | None = None
        self._measured_at = 0.0

    def used(self) -> int:
        now = time.monotonic()
        if self._used is None or now - self._measured_at > MEASURE_SECONDS:
            self._used = sum(folder_size(os.path.join(self.root, f)) for f in MEASURED_FOLDERS)
            self._measured_at = now
        return self._used

    def wrote(self, delta: int) -> None:
        if self._used is not None:
            self._used = max(0, self._used + delta)


def folder_size(path: str) -> int:
    """Bytes of the files under `path` (each inode once; symlinks not followed)."""
    total, seen = 0, set()
    stack = [path]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.is_symlink():
                    continue  # the target is counted where it lives, if it is ours
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    total += info.st_size
    return total


def storage_warning(state) -> str | None:
    """The warning users see when the project's storage is nearly full, or None."""
    used, policy = state.storage.used(), state.policy
    percent = int(used * 100 / policy.storage_bytes)
    if percent < policy.storage_warning_percent:
        return None
    return messages.refusal("storage-warning", percent=percent, **storage_values(used)).text


def storage_values(used: int) -> dict:
    policy = guard().policy
    return {"used": messages.human_size(used), "limit": messages.human_size(policy.storage_bytes),
            "tier": policy.tier}


def check_write(meter: StorageMeter, new_size: int, old_size: int) -> None:
    """Refuse (507) a write that would take the project over its storage quota."""
    used = meter.used()
    if new_size > old_size and used + new_size - old_size > guard().policy.storage_bytes:
        refusal = messages.refusal("storage-full", **storage_values(used))
        messages.current_refusal.set(refusal)
        raise web.HTTPError(507, refusal.text)


def oom_kills() -> int | None:
    for path in OOM_COUNTERS:
        try:
            with open(path, encoding="ascii") as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            continue
    return None


class GuardedKernel(ServerKernelManager):
    """One kernel, made right at every start of its process: the first start, a restart asked
    for from JupyterLab, and the automatic restart after it died (of the memory limit, say).

    - It is the first the OOM killer picks, so a memory hog dies and the server lives. The
      mark is per process: a restarted kernel would otherwise inherit the server's.
    - Its state is "starting" again. jupyter-server keeps the state of the process that died
      (jupyter-server issue #1395): a kernel killed while computing would stay "busy" for ever,
      so its server would never look idle (activity.py) and the websockets opened to it would
      skip the handshake that makes sure no reply is lost (ZMQChannelsWebsocketConnection.nudge).
    """

    async def _async_post_start_kernel(self, **kw) -> None:
        await super()._async_post_start_kernel(**kw)
        self.execution_state = "starting"
        pid = getattr(self.provisioner, "pid", None)
        if pid is None:
            return
        try:
            with open(f"/proc/{pid}/oom_score_adj", "w", encoding="ascii") as f:
                f.write(OOM_SCORE_ADJ)
        except OSError as error:
            self.log.warning("hdshub: could not mark a kernel for the OOM killer: %s", error)


class GuardedKernelManager(AsyncMappingKernelManager):
    """Kernels per server capped by the tier; none starts over the storage quota; each is a
    GuardedKernel."""

    @default("kernel_manager_class")
    def _guarded_kernel(self) -> str:
        return f"{GuardedKernel.__module__}.GuardedKernel"

    async def start_kernel(self, *, kernel_id=None, path=None, **kwargs):
        if kernel_id is None or kernel_id not in self:
            state = guard()
            policy = state.policy
            if len(self.list_kernel_ids()) >= policy.max_kernels:
                refusal = messages.refusal("too-many-kernels", count=policy.max_kernels, tier=policy.tier)
                messages.current_refusal.set(refusal)  # the trail records it with its reason
                raise web.HTTPError(403, refusal.text)
            used = state.storage.used()
            if used > policy.storage_bytes:
                refusal = messages.refusal("storage-full-kernel", **storage_values(used))
                messages.current_refusal.set(refusal)
                raise web.HTTPError(507, refusal.text)
        return await super().start_kernel(kernel_id=kernel_id, path=path, **kwargs)
