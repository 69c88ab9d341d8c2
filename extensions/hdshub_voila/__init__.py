"""hdshub_voila: preheated kernels for Voilà in a project's dashboard server.

Voilà 0.5 keeps a pool of kernels that have already run a dashboard's notebook only in its
standalone application; its jupyter-server extension, the only way to run Voilà behind
JupyterHub's authentication and the hdshub_guard gate, starts a kernel per page view and
runs the whole notebook before the page can show (several seconds with pandas, lifelines
and matplotlib). This extension gives the server extension the same pool: the server's
kernel manager becomes a pooled one (pool.py) that Voilà's page handler already knows how
to use, and every published dashboard gets kernels that ran it ahead of any request.

Enabled on the dashboard server's command line only (never in notebook servers). Its name
sorts after hdshub_guard on purpose: jupyter-server links extensions in name order, and the
pool wraps whatever kernel manager the guard chose (tier limits included).
"""

from __future__ import annotations

from .pool import pooled_kernel_manager, start_pools

__version__ = "0.1.0"


def _jupyter_server_extension_points():
    return [{"module": "hdshub_voila"}]


def _link_jupyter_server_extension(serverapp):
    if serverapp.trait_has_value("kernel_manager_class"):
        base = serverapp.kernel_manager_class
    else:  # its default needs managers that do not exist yet at link time
        from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager as base
    serverapp.kernel_manager_class = pooled_kernel_manager(base)


def _load_jupyter_server_extension(serverapp):
    if not hasattr(serverapp.kernel_manager, "get_rendered_notebook"):
        raise RuntimeError("hdshub_voila: the kernel manager was replaced after linking; "
                           "refusing to run without the pool")
    # Nothing loads from outside the hub: with both set to "null", Voilà's front end uses the
    # MathJax bundled with it instead of fetching one from a CDN.
    serverapp.web_app.settings.setdefault("mathjax_url", "null")
    serverapp.web_app.settings.setdefault("mathjax_config", "null")


async def _start_jupyter_server_extension(serverapp):
    # After every extension has loaded (voila.server_extension loads after this one), and
    # after the guard took the hub token out of the environment the kernels inherit.
    if "voila_jinja2_env" not in serverapp.web_app.settings:
        serverapp.log.error("hdshub_voila: voila.server_extension is not loaded: no dashboard "
                            "can be served, stopping")
        serverapp.stop()
        return
    start_pools(serverapp)
