"""ProjectSpawner: one hardened container per (user, project), decided by the project only.

A user starts the named server `<user>/<project>`. Everything about the container follows
from the project record in the hub database: image from the project's kit, limits from its
tier, the project's volumes and internal network. `user_options` choose nothing: any option
is refused, so no request can pick an image, a limit, a volume or a network.
"""

from __future__ import annotations

import asyncio
from html import escape
from pathlib import Path

import docker.errors
from dockerspawner import DockerSpawner
from jupyterhub import orm
from tornado import web
from traitlets import Dict, Integer, Unicode, default

from . import containers, culling, dashboard_server, dashboards, internal_tls, naming, policy, project_resources
from .projects import NOTEBOOK_ROLES, Project, roles_by_project


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

    egress = Dict(
        help="The validated egress limits (defaults/egress.yaml and the site's), written into "
        "each server's policy. Set by hdshub.configurer.",
    ).tag(config=True)

    policies_dir = Unicode(
        help="Host folder holding one policy folder per project, mounted read-only into its "
        "containers. Set by hdshub.configurer (in the state directory).",
    ).tag(config=True)

    certs_dir = Unicode(
        help="Host folder holding one folder per server with its internal TLS certificate, "
        "key and trusted CAs, mounted read-only into it. Set by hdshub.configurer.",
    ).tag(config=True)

    _idle_timeout: int | None = None
    _prepared = False

    home_size = Unicode(
        "128m",
        help="Size of the in-memory home directory (dotfiles, kernel runtime files); the "
        "root filesystem is read-only.",
    ).tag(config=True)

    tmp_size = Unicode("512m", help="Size of the in-memory /tmp.").tag(config=True)

    dashboard_pool_size = Integer(
        2,
        help="Preheated kernels a dashboard server keeps for each published dashboard: each "
        "has already run the notebook, so a viewer's page shows at once. 0 turns the pool off.",
    ).tag(config=True)

    dashboard_kernels = Integer(
        12,
        help="Kernels a dashboard server may run at once, its pool included: one per open "
        "dashboard page. They share the tier's memory (the demo's take about 200 MB each).",
    ).tag(config=True)

    dashboard_kernel_idle_seconds = Integer(
        900,
        help="A dashboard page's kernel with no activity for this long is shut down (its page "
        "was closed without saying so); preheated kernels are kept.",
    ).tag(config=True)

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
        self._idle_timeout = tier["idle_timeout_seconds"]
        self.mem_limit = tier["memory_bytes"]
        self.cpu_limit = tier["cpu"]
        self.environment = {
            **self.environment,  # keep what the configuration sets (JUPYTERHUB_ALLOW_TOKEN_IN_URL)
            **containers.thread_environment(tier),
            **containers.guard_environment(),
            # Often enough for the idle culler not to stop a server in use (culling.py).
            "JUPYTERHUB_ACTIVITY_INTERVAL": str(culling.check_interval(tier["idle_timeout_seconds"])),
        }
        self.network_name = network
        policy_folder = self.write_policy(project, tier)
        self.volumes, self.read_only_volumes = containers.project_mounts(volumes, policy_folder)
        self.extra_create_kwargs = {
            "user": containers.NOTEBOOK_UID,
            "working_dir": containers.HOME,
            "labels": containers.labels(project.slug, self.user.name, "notebook-server"),
        }
        limits = containers.limits(tier)
        self.extra_host_config = {
            **containers.hardening(tmp_size=self.tmp_size, home_size=self.home_size),
            # Memory and CPU go through DockerSpawner's own traits (set above).
            "pids_limit": limits["pids_limit"],
            "memswap_limit": limits["memswap_limit"],
        }

    def write_policy(self, project: Project, tier: dict):
        """Write the policy the guard enforces in this server; return its host folder."""
        folder = Path(self.policies_dir) / project.slug
        policy.write(folder, policy.build(project, self.egress, tier, "notebook"))
        return folder

    def get_env(self):
        env = super().get_env()
        env["HDSHUB_PROJECT"] = self.name
        env["HOME"] = containers.HOME
        return env

    # -- lifecycle ------------------------------------------------------------------------

    def check_project_servers(self, project: Project) -> None:
        """The tier's concurrent-server quota, counted over every member of the project
        (servers running or starting: JupyterHub records a server before starting it)."""
        tier = self.tiers.get(project.tier)
        if tier is None:
            return  # configure_for refuses an unknown tier with its own message
        running = (
            self.db.query(orm.Spawner)
            .filter(orm.Spawner.name == project.slug, orm.Spawner.server_id.isnot(None),
                    orm.Spawner.id != self.orm_spawner.id)  # ours has its record already
            .count()
        )
        if running >= tier["servers"]:
            raise refusal(
                429,
                f"Le projet {project.slug} a déjà {running} serveurs en marche, le maximum de "
                f"l'offre {project.tier} : demandez à un membre d'arrêter le sien, ou passez à "
                "une offre supérieure.",
                f"Project {project.slug} already has {running} servers running, the most the "
                f"{project.tier} tier allows: ask a member to stop theirs, or move to a higher tier.",
            )

    async def prepare(self) -> None:
        """Decide everything about the container, refusals first, before anything is made
        for it: JupyterHub creates a server's internal TLS certificate before start(), and
        the certificate names the address decided here."""
        if self.user.name == dashboards.OWNER:
            project = self.dashboard_project()
        else:
            project, _roles = self.authorized_project()
            self.check_project_servers(project)
        volumes, network = await asyncio.wrap_future(
            self.executor.submit(self._ensure_project_resources, project.slug)
        )
        self.configure_for(project, volumes, network)  # image, limits, hardening: as any server
        if self.user.name == dashboards.OWNER:
            self.configure_dashboard_server(project, volumes)
            dashboard_server.grant_viewers(self.user.db, project.slug)
        if self.internal_ssl:
            address = await asyncio.wrap_future(
                self.executor.submit(project_resources.free_address, self.client, network)
            )
            self.ssl_alt_names = [f"IP:{address}"]
            self.ssl_alt_names_include_local = False
            endpoint = self.client.create_endpoint_config(ipv4_address=address)
            self.extra_create_kwargs = {
                **self.extra_create_kwargs,
                "networking_config": self.client.create_networking_config({network: endpoint}),
            }
        self._prepared = True

    async def create_certs(self):
        await self.prepare()
        paths = await super().create_certs()
        internal_tls.make_private(Path(self.internal_certs_location))
        return paths

    async def move_certs(self, paths):
        """Give the server its own copy of its certificate, key and trusted CAs, mounted
        read-only (DockerSpawner's way needs an image from a registry and a volume shared
        by all of a user's servers)."""
        folder = Path(self.certs_dir) / self.object_name
        in_container = await asyncio.wrap_future(
            self.executor.submit(internal_tls.stage, paths, folder, containers.CERTS_MOUNT)
        )
        self.read_only_volumes = {**self.read_only_volumes, str(folder): containers.CERTS_MOUNT}
        return in_container

    @property
    def volume_binds(self):
        # DockerSpawner would add a volume of its own for certificates (see move_certs).
        binds = self._volumes_to_binds(self.volumes, {})
        return self._volumes_to_binds(self.read_only_volumes, binds, mode="ro")

    async def stop(self, now=False):
        await super().stop(now=now)
        if self.certs_dir:
            internal_tls.remove(Path(self.certs_dir) / self.object_name)

    async def start(self):
        if not self._prepared:
            await self.prepare()
        self._prepared = False
        ip, port = await super().start()
        await self._wait_listening(ip, port)
        return ip, port

    # -- the project's dashboard server (dashboards/<project>, see dashboard_server.py) ----

    def dashboard_project(self) -> Project:
        """The project whose dashboards this server serves, or a refusal."""
        group = orm.Group.find(self.user.db, name=self.name) if self.name else None
        project = Project.from_group(self.name, group.properties) if group else None
        if project is None:
            raise refusal(404, f"Projet inconnu : {self.name}.", f"Unknown project: {self.name}.")
        if self.user_options:
            raise refusal(400, "Les options de démarrage ne sont pas acceptées.",
                          "Start options are not accepted.")
        if not dashboards.live(project.dashboards):
            raise refusal(409, f"Le projet {project.slug} n'a aucun tableau de bord publié.",
                          f"Project {project.slug} has no published dashboard.")
        return project

    def configure_dashboard_server(self, project: Project, volumes: dict[str, str]) -> None:
        """What differs from a notebook server: Voilà only, guard in dashboard mode, every
        mount read-only, no work or outputs area."""
        tier = {**self.tiers[project.tier], "kernels": self.dashboard_kernels,
                "idle_timeout_seconds": self.dashboard_kernel_idle_seconds}
        folder = dashboard_server.policy_folder(self.policies_dir, project.slug)
        policy.write(folder, policy.build(project, self.egress, tier, "dashboard"))
        self.volumes = {}
        self.read_only_volumes = dashboard_server.mounts(volumes, folder)
        self.environment = {**self.environment, **dashboard_server.environment()}
        self.notebook_dir = dashboards.LIVE_DIR
        self.default_url = dashboard_server.DEFAULT_URL
        self.extra_create_kwargs = {
            **self.extra_create_kwargs,
            "labels": containers.labels(project.slug, self.user.name, dashboard_server.PURPOSE),
        }

    async def poll(self):
        status = await super().poll()
        if status is None and self.user.name == dashboards.OWNER:
            # Also at hub start, which deletes the viewers' role (see grant_viewers).
            dashboard_server.grant_viewers(self.user.db, self.name)
        return status

    def get_args(self):
        args = super().get_args()
        if self.user.name == dashboards.OWNER:
            args += dashboard_server.server_args(self.dashboard_pool_size, self.cpu_limit or 1)
        return args

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

    def get_state(self):
        """Besides DockerSpawner's: the tier's idle timeout, read by the idle culler."""
        state = super().get_state()
        if self._idle_timeout is not None:
            state[culling.STATE_KEY] = self._idle_timeout
        return state

    def load_state(self, state):
        super().load_state(state)
        self._idle_timeout = state.get(culling.STATE_KEY)

    def clear_state(self):
        super().clear_state()
        self._idle_timeout = None

    async def stop(self, now=False):
        # A refused start never created a container: nothing to stop.
        if not self.object_id:
            self.clear_state()
            return
        await super().stop(now=now)
