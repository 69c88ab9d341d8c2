"""JupyterLab's start-up notification, used to warn when the project's storage is nearly full.

JupyterLab's own update check is off (containers have no internet); its notification is the
one way a server can show a message in JupyterLab without a front-end extension. Kept apart
from quota.py because only the containers have JupyterLab.
"""

from __future__ import annotations

from jupyterlab.handlers.announcements import CheckForUpdateABC

from .quota import storage_warning
from .state import guard


class StorageNotice(CheckForUpdateABC):
    async def __call__(self):
        return storage_warning(guard())
