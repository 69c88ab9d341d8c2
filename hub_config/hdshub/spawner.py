"""ProjectSpawner: one hardened container per (user, project), decided by the project only.

A user starts the named server `<user>/<project>`. Everything about the container follows
from the project record in the hub database: image from the project's kit, limits from its
tier, the project's volumes and internal network. `user_options` choose nothing: any option
is refused, so no request can pick an image, a limit, a volume or a network.
"""

from __future__ import annotations

import asyncio
import math
from html import escape

import docker.errors
from dockerspawner import DockerSpawner
from jupyterhub import orm
from tornado import web
from traitlets import Dict, Unicode, default

from . import naming, project_resources
from .projects import NOTEBOOK_ROLES, Project, roles_by_project

HOME = "/home/jovyan"
NOTEBOOK_UID = "1000:1000"


def refusal(status: int, fr: str, en: str) -> web.HTTPError:
    """An HTTP error whose message JupyterHub shows as is, on its pages and in the API.

    Pages get both languages marked up, so that page.html shows the reader's; the API gets
    'French / English'.
    """
    error = web.HTTPError(status, "%s", f"{fr} / {en}")
    error.jupyterhub_message = f"{fr} / {en}"
    error.jupyterhub_html_message = (
        f'<span class="hds-fr" lang="fr">{escape(fr)}</span>'
        f'<span class="hds-en" lang="en">{escape(en)}</span>'
    )
    return error


class ProjectSpawner(DockerSpawner):
    tiers = Dict(
        help="Tier name -> {'cpu': float, 'memory_bytes': int, 'pids': int}, from the "
        "validated tiers file. Set by hdshub.configurer, never by hand.",
    ).tag(config=True)

    kit_images = Dict(
        help="Kit name -> image tag (for example 'python-stats' -> "
        "'hdshub/python-stats:latest'). Set by hdshub.configurer from stats_kits/.",
    ).tag(config=True)

    home_size = Unicode(
        "128m",
        help="Size of the in-memory home directory (dotfiles, kernel runtime files); the "
        "root filesystem is read-only.",
    ).tag(config=True)

    tmp_size = Unicode("512m", help="Size of the in-memory /tmp.").tag(config=True)

    @default("object_name")
    def _object_name_default(self):
        # The default server has no project; it is refused in start(), never created.
        if not self.name:
            return f"hds-noproject.{naming.escape_username(self.user.name)}"
        return naming.container_name(self.name, self.user.name)

    # -- deciding -----------------------------------------------------------------------

    def authorized_project(self) -> tuple[Project, set[str]]:
        """The project of this server and the user's roles in it, or a refusal."""
        slug = self.name
        if not slug:
            raise refusal(
                400,
                "Choisissez un projet : un serveur appartient toujours à un projet.",
                "Choose a project: a server always belongs to a project.",
            )
        group = orm.Group.find(self.user.db, name=slug)
        project = Project.from_group(slug, group.properties) if group else None
        if project is None:
            raise refusal(404, f"Projet inconnu : {slug}.", f"Unknown project: {slug}.")
        roles = roles_by_project(g.name for g in self.user.groups).get(slug, set())
        if not roles:
            raise refusal(
                403,
                f"Vous n'êtes pas membre du projet {slug} ; demandez à son responsable de "
                "vous y ajouter.",
                f"You are not a member of project {slug}; ask its manager to add you.",
            )
        if not roles & NOTEBOOK_ROLES:
            held = ", ".join(sorted(roles))
            raise refusal(
                403,
                f"Votre rôle dans le projet {slug} ({held}) ne donne pas accès aux notebooks.",
                f"Your role in project {slug} ({held}) gives no access to notebooks.",
            )
        if self.user_options:
            given = ", ".join(sorted(self.user_options))
            raise refusal(
                400,
                "Les options de démarrage ne sont pas acceptées : l'image, les limites et "
                f"les volumes dépendent du projet (reçu : {given}).",
                "Start options are not accepted: image, limits and volumes follow from the "
                f"project (got: {given}).",
            )
        return project, roles

    def configure_for(self, project: Project, volumes: dict[str, str], network: str) -> None:
        """Set every container setting from the project; nothing comes from the request."""
        tier = self.tiers.get(project.tier)
        image = self.kit_images.get(project.kit)
        if tier is None or image is None:
            missing = f"tier {project.tier!r}" if tier is None else f"kit {project.kit!r}"
            raise refusal(
                500,
                f"Le projet {project.slug} utilise un {missing} inconnu de ce hub ; "
                "contactez l'administrateur.",
                f"Project {project.slug} uses {missing}, unknown to this hub; contact the "
                "administrator.",
            )
        self.image = image
        self.allowed_images = [image]
        self.mem_limit = tier["memory_bytes"]
        self.cpu_limit = tier["cpu"]
        # Numerical libraries start one thread per *host* core unless told otherwise;
        # threads count against the pids limit and beyond the CPU quota they only contend.
        threads = str(max(1, math.ceil(tier["cpu"])))
        self.environment = {
            **self.environment,  # keep what the configuration sets (JUPYTERHUB_ALLOW_TOKEN_IN_URL)
            **{
                name: threads
                for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_MAX_THREADS")
            },
        }
        self.network_name = network
        self.volumes = {
            volumes["work"]: f"{HOME}/work",
            volumes["outputs"]: f"{HOME}/outputs",
        }
        self.read_only_volumes = {volumes["data"]: f"{HOME}/data"}
        self.extra_create_kwargs = {
            "user": NOTEBOOK_UID,
            "working_dir": HOME,
            "labels": {
                project_resources.LABEL_PROJECT: project.slug,
                "org.hdshub.user": naming.escape_username(self.user.name),
            },
        }
        self.extra_host_config = {
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "pids_limit": tier["pids"],
            # No swap beyond the tier's memory: a memory hog is stopped, not slowed down.
            "memswap_limit": tier["memory_bytes"],
            "init": True,
            "privileged": False,
            "ipc_mode": "private",
            "tmpfs": {
                "/tmp": f"rw,nosuid,nodev,noexec,size={self.tmp_size}",
                HOME: f"rw,nosuid,nodev,noexec,size={self.home_size},uid=1000,gid=1000,mode=0700",
            },
        }

    def get_env(self):
        env = super().get_env()
        env["HDSHUB_PROJECT"] = self.name
        env["HOME"] = HOME
        return env

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self):
        project, _roles = self.authorized_project()
        volumes, network = await asyncio.wrap_future(
            self.executor.submit(self._ensure_project_resources, project.slug)
        )
        self.configure_for(project, volumes, network)
        ip, port = await super().start()
        await self._wait_listening(ip, port)
        return ip, port

    async def _wait_listening(self, ip: str, port: int) -> None:
        """Return as soon as the server listens, so that the hub's own check passes at once.

        JupyterHub waits for a new server with exponential back-off and was seen to notice a
        ready server 1-3 s late; polling the port every 50 ms removes that delay. A container
        that exits is left for the hub to report.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        next_poll = loop.time() + 0.5
        while loop.time() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 1)
            except (OSError, asyncio.TimeoutError):
                if loop.time() >= next_poll:
                    if await self.poll() is not None:
                        return
                    next_poll = loop.time() + 0.5
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return

    def _ensure_project_resources(self, slug: str) -> tuple[dict[str, str], str]:
        return (
            project_resources.ensure_volumes(self.client, slug),
            project_resources.ensure_network(self.client, slug),
        )

    async def pull_image(self, image):
        """There is no registry: a missing image is an installation error, said plainly."""
        try:
            await self.docker("inspect_image", image)
        except docker.errors.NotFound:
            raise refusal(
                503,
                f"L'image {image} n'est pas construite sur ce serveur ; l'administrateur "
                "doit lancer « hdshub images build ».",
                f"Image {image} is not built on this host; the administrator must run "
                "'hdshub images build'.",
            ) from None

    async def stop(self, now=False):
        # A refused start never created a container: nothing to stop.
        if not self.object_id:
            self.clear_state()
            return
        await super().stop(now=now)
