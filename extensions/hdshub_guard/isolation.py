"""Keep the server's secrets out of reach of the kernels it starts.

Kernels run code of the user's choosing under the server's uid. Two things would let such
code act as the server (send audit events in its name, report activity, call the hub): the
hub token in the environment kernels inherit, and reading the server's memory or
/proc/<pid>/environ, which the same uid may do. Both are closed here, once the server has read
its token: the token leaves the environment, and the server process becomes non-dumpable
(the kernel then gets EPERM on its /proc files and on ptrace).
"""

from __future__ import annotations

import ctypes
import os

SECRET_VARIABLES = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")
PR_SET_DUMPABLE = 4


def take_secrets() -> dict[str, str]:
    """Remove the hub token from the environment kernels will inherit; return it."""
    return {name: os.environ.pop(name) for name in SECRET_VARIABLES if name in os.environ}


def make_undumpable() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
