"""hdshub_guard: the jupyter-server extension that runs inside every project container.

It exists to be the one place that decides what may leave the container over HTTP
(downloads, exports, file and kernel APIs), what storage quota remains, and what goes into
the audit trail. Every such rule lives here, driven by a policy file written by the hub, so
that no other component of the single-user server has a say on egress.

For now it only loads and says which policy file it would enforce. It must stay importable
without the hub package: it shares data formats with the hub, never code.
"""

import os

__version__ = "0.1.0"

#: Where the hub places the project's policy (read-only mount); overridable for tests.
POLICY_PATH_ENV = "HDSHUB_POLICY_PATH"
DEFAULT_POLICY_PATH = "/etc/hdshub/policy.json"


def policy_path() -> str:
    """Return the path of the policy file this container must enforce."""
    return os.environ.get(POLICY_PATH_ENV) or DEFAULT_POLICY_PATH


def _jupyter_server_extension_points():
    return [{"module": "hdshub_guard"}]


def _load_jupyter_server_extension(serverapp):
    serverapp.log.info("hdshub_guard loaded (policy: %s)", policy_path())
