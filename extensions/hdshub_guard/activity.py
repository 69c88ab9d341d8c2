"""A kernel that is computing counts as activity.

The hub's idle culler stops a server by the last activity the server reports, and
jupyter-server counts only requests and kernel messages: a kernel busy for longer than the
tier's idle timeout without printing (a long model fit, a large join) would have its server
stopped under it. jupyter-server adds every setting whose name ends in `_last_activity` to
the time it reports, so while a kernel is busy this one is kept at now. Runaway kernels are
still bounded by the tier's maximum server age (__init__._stop_at_max_age).
"""

from __future__ import annotations

from datetime import datetime, timezone

from tornado.ioloop import PeriodicCallback

SETTING = "hdshub_busy_kernels_last_activity"
CHECK_EVERY_MS = 5_000


def count_busy_kernels(serverapp) -> PeriodicCallback:
    kernels = serverapp.kernel_manager

    def mark_if_busy() -> None:
        for kernel_id in kernels.list_kernel_ids():
            if getattr(kernels.get_kernel(kernel_id), "execution_state", None) == "busy":
                serverapp.web_app.settings[SETTING] = datetime.now(timezone.utc)
                return

    callback = PeriodicCallback(mark_if_busy, CHECK_EVERY_MS)
    callback.start()
    return callback
