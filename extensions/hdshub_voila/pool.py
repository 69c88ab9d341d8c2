"""Kernels that already ran a dashboard, ready before anyone asks for it.

Voilà's page handler (voila/handler.py) asks the server's kernel manager three things when
it has them: `notebook_data` (which notebooks were pre-rendered, with which template and
theme), `get_pool_size(notebook)` and `get_rendered_notebook(notebook)`, which hands out a
kernel that already executed the notebook along with the HTML rendered meanwhile. The pooled
kernel manager below answers them; without them the handler starts a kernel per page.

A pre-rendered page is the same for every viewer: Voilà's page configuration holds no user,
token or cookie, and each page gets its own kernel, never shared.
"""

from __future__ import annotations

import asyncio
import os

from traitlets import Float, Integer


def _failed(task: asyncio.Future) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


def pooled_kernel_manager(base: type) -> type:
    """`base` (the server's kernel manager class) with a pool of pre-run kernels per notebook."""

    class PooledKernelManager(base):
        pool_size = Integer(
            2, config=True,
            help="Kernels kept ready for each dashboard, each having run its notebook; a "
            "viewer gets one at once and a new one is prepared. 0 turns the pool off.",
        )
        refill_delay = Float(
            1.0, config=True,
            help="Seconds before the kernel handed to a viewer is replaced, so that the "
            "viewer's page gets the CPU first.",
        )
        concurrent_preparations = Integer(
            1, config=True,
            help="Kernels running a dashboard's notebook at the same time (set to the server's "
            "CPUs). When more viewers arrive than the pool holds, they queue for the next "
            "prepared kernel: on one CPU, ten notebooks run one after the other end sooner, on "
            "average, than ten run together.",
        )

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.notebook_data: dict[str, dict] = {}
            self._pools: dict[str, list[asyncio.Future]] = {}
            self._waiting: set[str] = set()  # kernels in a pool, not handed out yet
            self._spoiled: set[str] = set()  # pooled kernels that restarted: their state is gone
            self._renderer_for = None
            self._kernel_env: dict[str, str] = {}
            self._slots: asyncio.Semaphore | None = None

        # -- what Voilà's page handler asks -----------------------------------------------

        def get_pool_size(self, notebook: str) -> int:
            """With the pool on, never 0 once a notebook is known: a viewer who finds no
            kernel ready waits for the next one instead of running the notebook alongside."""
            ready = sum(1 for task in self._pools.get(notebook, ()) if not _failed(task))
            on = self._renderer_for is not None and self.pool_size > 0 and notebook in self.notebook_data
            return max(ready, 1) if on else ready

        async def get_rendered_notebook(self, notebook_name: str, extra_kernel_env_variables=None, **_):
            """(render task, HTML rendered so far, kernel id) of a kernel that ran the notebook."""
            pool = self._pools.setdefault(notebook_name, [])
            ready, attempts = None, 0
            while ready is None:
                # The oldest preparation under way, else a new one for this viewer.
                task = pool.pop(0) if pool else self._schedule(notebook_name, delay=0)
                try:
                    candidate = await task
                except Exception:
                    attempts += 1
                    if attempts >= 3:
                        raise
                    continue  # logged when it failed
                kernel_id = candidate["kernel_id"]
                self._waiting.discard(kernel_id)
                if kernel_id in self._spoiled or kernel_id not in self:
                    await self._discard(kernel_id)
                    continue
                ready = candidate
            ready["renderer"].stop_generator = True
            self.log.info("hdshub_voila: preheated kernel %s for %s (%d left)", ready["kernel_id"],
                          notebook_name, sum(1 for t in pool if not _failed(t)))
            self.fill(notebook_name, delay=self.refill_delay)
            return ready["task"], ready["renderer"].rendered_cache, ready["kernel_id"]

        # -- filling ----------------------------------------------------------------------

        def start_pools(self, renderer_for, kernel_env: dict[str, str], notebooks: list[str]) -> None:
            """Start preparing `pool_size` kernels for each notebook (paths under the root)."""
            self._renderer_for = renderer_for
            self._kernel_env = dict(kernel_env)
            for notebook in notebooks:
                self.fill(notebook, delay=0)
            self.log.info("hdshub_voila: preparing %d kernel(s) for each of %s", self.pool_size,
                          ", ".join(notebooks) or "no dashboard")

        def fill(self, notebook: str, delay: float) -> None:
            if self._renderer_for is None or self.pool_size <= 0:
                return
            pool = self._pools.setdefault(notebook, [])
            pool[:] = [task for task in pool if not _failed(task)]
            for _ in range(self.pool_size - len(pool)):
                pool.append(self._schedule(notebook, delay))

        def _schedule(self, notebook: str, delay: float) -> asyncio.Future:
            task = asyncio.ensure_future(self._prepare_after(notebook, delay))
            task.add_done_callback(lambda t: self._report_failure(t, notebook))
            return task

        def _report_failure(self, task: asyncio.Future, notebook: str) -> None:
            if _failed(task) and not task.cancelled():
                self.log.error("hdshub_voila: could not prepare a kernel for %s: %s", notebook,
                               task.exception())

        async def _prepare_after(self, notebook: str, delay: float) -> dict:
            if delay:
                await asyncio.sleep(delay)
            if self._slots is None:
                self._slots = asyncio.Semaphore(max(1, self.concurrent_preparations))
            async with self._slots:  # a slot is held until the notebook has run
                ready = await self._prepare(notebook)
                await asyncio.wait([ready["task"]])
            return ready

        async def _prepare(self, notebook: str) -> dict:
            renderer = self._renderer_for(notebook)
            await renderer.initialize()
            kernel_id = await self.start_kernel(
                kernel_name=renderer.notebook.metadata.kernelspec.name,
                path=os.path.dirname(notebook), env=dict(self._kernel_env))
            self._waiting.add(kernel_id)
            self.add_restart_callback(kernel_id, lambda: self._spoiled.add(kernel_id), "restart")
            data = self.notebook_data.setdefault(notebook, {"kernel_ids": set()})
            data.update(template=renderer.template_name, theme=renderer.theme)
            data["kernel_ids"].add(kernel_id)
            task = asyncio.ensure_future(
                renderer.generate_content_hybrid(kernel_id, self.get_kernel(kernel_id)))
            return {"renderer": renderer, "task": task, "kernel_id": kernel_id}

        async def _discard(self, kernel_id: str) -> None:
            if kernel_id in self:
                try:
                    await self.shutdown_kernel(kernel_id)
                except Exception:
                    self.log.warning("hdshub_voila: could not shut down kernel %s", kernel_id)

        # -- kernels leaving ----------------------------------------------------------------

        async def cull_kernel_if_idle(self, kernel_id: str):
            if kernel_id in self._waiting:
                return None  # waiting for a viewer is its job
            return await super().cull_kernel_if_idle(kernel_id)

        async def shutdown_kernel(self, kernel_id: str, *args, **kwargs):
            _forget_request_info(kernel_id)
            self._waiting.discard(kernel_id)
            self._spoiled.discard(kernel_id)
            for data in self.notebook_data.values():
                data["kernel_ids"].discard(kernel_id)
            for pool in self._pools.values():
                pool[:] = [task for task in pool
                           if not (task.done() and not _failed(task) and task.result()["kernel_id"] == kernel_id)]
            return await super().shutdown_kernel(kernel_id, *args, **kwargs)

        async def shutdown_all(self, *args, **kwargs):
            pools, self._pools = self._pools, {}
            self._renderer_for = None  # nothing is refilled while the server stops
            for pool in pools.values():
                for task in pool:
                    task.cancel()
            return await super().shutdown_all(*args, **kwargs)

    return PooledKernelManager  # configured as PooledKernelManager, whatever its base


def _forget_request_info(kernel_id: str) -> None:
    """Voilà's page handler leaves each preheated page's request details in a class-level
    cache that only its standalone application reads; dropped with the kernel."""
    try:
        from voila.request_info_handler import RequestInfoSocketHandler
    except ImportError:
        return
    RequestInfoSocketHandler._cache.pop(kernel_id, None)


def start_pools(serverapp) -> None:
    """Prepare kernels for every dashboard in the server's root folder, as Voilà would
    render them (same configuration, templates and page configuration as its handler)."""
    from voila.configuration import VoilaConfiguration
    from voila.notebook_renderer import NotebookRenderer
    from voila.paths import collect_template_paths
    from voila.utils import ENV_VARIABLE, get_page_config

    configuration = VoilaConfiguration(parent=serverapp)
    template_paths = collect_template_paths(["voila", "nbconvert"], configuration.template)
    settings = serverapp.web_app.settings
    base_url = serverapp.base_url

    def renderer_for(notebook: str):
        page_config = get_page_config(base_url=base_url, settings=settings, log=serverapp.log,
                                      voila_configuration=configuration)
        return NotebookRenderer(
            voila_configuration=configuration, traitlet_config=serverapp.config,
            notebook_path=notebook, template_paths=template_paths,
            config_manager=serverapp.config_manager, contents_manager=serverapp.contents_manager,
            base_url=base_url, kernel_spec_manager=serverapp.kernel_spec_manager,
            page_config=page_config, mathjax_config=settings.get("mathjax_config"),
            mathjax_url=settings.get("mathjax_url"),
        )

    kernel_env = {
        **os.environ,
        ENV_VARIABLE.VOILA_PREHEAT: "True",
        ENV_VARIABLE.VOILA_BASE_URL: base_url,
        ENV_VARIABLE.VOILA_SERVER_URL: base_url,
        ENV_VARIABLE.VOILA_APP_PORT: str(serverapp.port),
    }
    notebooks = sorted(entry.name for entry in os.scandir(serverapp.root_dir)
                       if entry.is_file() and entry.name.endswith(".ipynb") and not entry.name.startswith("."))
    serverapp.kernel_manager.start_pools(renderer_for, kernel_env, notebooks)
