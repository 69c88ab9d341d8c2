"""Published dashboards: read-only, versioned snapshots of notebooks from a project's work area.

An analyst publishes `work/<path>.ipynb` as the dashboard `<name>`; the hub copies it, with
its outputs cleared and its publication written into its metadata, into the project's
dashboards volume `hds-<p>-dashboards`:

    archive/<name>/v<n>.ipynb   every version ever published, never changed (root, 0444)
    live/<name>.ipynb           the version viewers get; removed when withdrawn (root, 0444)

and records who, when, the version and its sha256 in the project group's properties
(`dashboards`). Only `live/` is served, read-only, by the project's dashboard server
(spawner.py): a withdrawn dashboard or an old version cannot be opened, and stays on record.

Everything here is either pure (records, snapshots) or goes through Docker
(DashboardVolume); the hub's handlers (dashboard_hub.py) put the two together.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import docker
import docker.errors

from . import naming, project_resources

#: The system hub user owning every project's dashboard server `dashboards/<project>`.
#: Nobody logs in as it (auth.NoSystemUserLogin); viewers reach its servers through a role
#: held by the project's role groups (dashboard_server.grant_viewers).
OWNER = naming.DASHBOARD_OWNER
#: Where the dashboard server sees the dashboards volume (read-only), and serves from.
MOUNT = "/srv/hdshub/dashboards"
LIVE_DIR = f"{MOUNT}/live"
#: Roles that may publish and withdraw; every member of the project may view.
PUBLISHER_ROLES = frozenset({"analyst", "statistician", "steward"})
NAME_PATTERN = re.compile(r"[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?")
UTILITY_PURPOSE = "dashboard-publication"


class DashboardError(ValueError):
    """A refused dashboard operation: `status` for HTTP, the message in French and English."""

    def __init__(self, status: int, fr: str, en: str):
        super().__init__(f"{en} / {fr}")
        self.status, self.fr, self.en = status, fr, en


@dataclass(frozen=True)
class Snapshot:
    name: str
    version: int
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


# -- names and paths -----------------------------------------------------------------------

def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or "--" in name:
        raise DashboardError(
            400,
            f"Nom de tableau de bord invalide {name!r} : 1 à 40 caractères a-z, 0-9 et '-', "
            "commençant par une lettre (par exemple survie-2026) ; donnez-le avec --name.",
            f"Invalid dashboard name {name!r}: 1-40 characters a-z, 0-9 and '-', starting with "
            "a letter (for example survival-2026); give one with --name.",
        )
    return name


def notebook_path(path: str) -> str:
    """The notebook's path inside the work area, normalised, or a refusal."""
    text = (path or "").strip()
    if text.startswith("work/"):
        text = text[len("work/"):]
    normal = posixpath.normpath(text) if text else ""
    if (not normal or normal.startswith(("/", "../")) or normal in (".", "..")
            or not normal.endswith(".ipynb") or len(normal) > 255
            or any(ord(c) < 32 or c == "\\" for c in normal)):
        raise DashboardError(
            400,
            f"Chemin de notebook refusé {path!r} : donnez le chemin d'un fichier .ipynb du "
            "dossier work du projet, par exemple work/analyses/survie.ipynb.",
            f"Notebook path refused {path!r}: give the path of a .ipynb file in the project's "
            "work folder, for example work/analyses/survival.ipynb.",
        )
    return normal


def default_name(path: str) -> str:
    stem = posixpath.basename(path)[: -len(".ipynb")]
    return validate_name(re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-"))


# -- records (group properties) ------------------------------------------------------------

def find(records, name: str) -> dict | None:
    return next((r for r in records if r["name"] == name), None)


def is_live(record: dict) -> bool:
    return bool(record.get("versions")) and not record.get("withdrawn")


def live(records) -> list[dict]:
    """What viewers see: each live dashboard at its current version."""
    shown = []
    for record in sorted(records, key=lambda r: r["name"]):
        if is_live(record):
            current = record["versions"][-1]
            shown.append({"name": record["name"], "title": record["title"], **current})
    return shown


def next_version(records, name: str) -> int:
    record = find(records, name)
    return len(record["versions"]) + 1 if record else 1


def with_publication(records, name: str, title: str, version: dict) -> list[dict]:
    """The records after publishing `version` of `name` (a copy; a withdrawal is lifted)."""
    updated, found = [], False
    for record in records:
        if record["name"] == name:
            record = {**record, "title": title, "versions": [*record["versions"], version], "withdrawn": None}
            found = True
        updated.append(record)
    if not found:
        updated.append({"name": name, "title": title, "versions": [version], "withdrawn": None})
    return updated


def with_withdrawal(records, name: str, by: str, at: str) -> list[dict]:
    record = find(records, name)
    if record is None or not is_live(record):
        raise DashboardError(
            404, f"Aucun tableau de bord publié nommé {name!r} dans ce projet.",
            f"No published dashboard named {name!r} in this project.")
    return [{**r, "withdrawn": {"at": at, "by": by}} if r["name"] == name else r for r in records]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- snapshots ------------------------------------------------------------------------------

def snapshot(raw: bytes, name: str, title: str | None, version: int, by: str, at: str) -> tuple[Snapshot, str]:
    """(the stored notebook, its title): outputs cleared (a dashboard computes its own; saved
    outputs could hold rows of data), widget state dropped, the publication in its metadata."""
    import nbformat

    try:
        notebook = nbformat.reads(raw.decode("utf-8"), as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # invalid UTF-8, JSON or notebook format
        raise DashboardError(
            400, f"Ce fichier n'est pas un notebook valide ({str(error)[:200]}).",
            f"This file is not a valid notebook ({str(error)[:200]}).") from None
    if not any(cell.cell_type == "code" for cell in notebook.cells):
        raise DashboardError(400, "Ce notebook n'a aucune cellule de code : rien à afficher.",
                             "This notebook has no code cell: nothing to show.")
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    notebook.metadata.pop("widgets", None)
    title = (title or notebook.metadata.get("title") or name).strip()[:120]
    notebook.metadata["title"] = title
    notebook.metadata["hdshub"] = {"dashboard": name, "title": title, "version": version,
                                   "published_at": at, "published_by": by}
    data = nbformat.writes(notebook).encode("utf-8")
    return Snapshot(name=name, version=version, data=data), title


def version_entry(snap: Snapshot, source: str, by: str, at: str) -> dict:
    return {"version": snap.version, "sha256": snap.sha256, "size": len(snap.data),
            "source": f"work/{source}", "published_at": at, "published_by": by}


# -- the volumes (Docker) -------------------------------------------------------------------

class DashboardVolume:
    """Reads a notebook from a project's work volume; writes and removes snapshots in its
    dashboards volume. Only never-started or one-command utility containers touch them."""

    def __init__(self, client: docker.DockerClient, slug: str):
        self.client = client
        self.slug = naming.validate_slug(slug)
        self.volumes = project_resources.ensure_volumes(client.api, slug)

    def read_notebook(self, path: str, max_bytes: int) -> bytes:
        container = self._container({self.volumes["work"]: {"bind": "/work", "mode": "ro"}})
        try:
            try:
                stream, stat = container.get_archive(f"/work/{path}")
            except docker.errors.NotFound:
                raise DashboardError(
                    404, f"Pas de notebook work/{path} dans le projet {self.slug}.",
                    f"No notebook work/{path} in project {self.slug}.") from None
            if stat.get("size", 0) > max_bytes:
                raise self._too_big(path, max_bytes)
            archive = io.BytesIO()
            for chunk in stream:
                archive.write(chunk)
                if archive.tell() > max_bytes + 64 * 1024:
                    raise self._too_big(path, max_bytes)
        finally:
            container.remove(force=True)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            member = tar.next()
            if member is None or not member.isfile():
                raise DashboardError(
                    400, f"work/{path} n'est pas un fichier ordinaire (lien ou dossier).",
                    f"work/{path} is not a regular file (a link or a folder).")
            return tar.extractfile(member).read()

    def write(self, snap: Snapshot) -> None:
        """archive/<name>/v<n>.ipynb, then live/<name>.ipynb: root's, read-only."""
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for folder in ("archive", f"archive/{snap.name}", "live"):
                tar.addfile(self._info(folder, tarfile.DIRTYPE, 0o755))
            for path in (f"archive/{snap.name}/v{snap.version}.ipynb", f"live/{snap.name}.ipynb"):
                tar.addfile(self._info(path, tarfile.REGTYPE, 0o444, len(snap.data)), io.BytesIO(snap.data))
        container = self._container({self.volumes["dashboards"]: {"bind": "/dashboards", "mode": "rw"}})
        try:
            container.put_archive("/dashboards", archive.getvalue())
        finally:
            container.remove(force=True)

    def restore(self, name: str, version: int | None) -> None:
        """Put back the live file of `version` (None: no live file), after a failed record."""
        command = f"rm -f live/{validate_name(name)}.ipynb"
        if version:
            command += f" && cp archive/{name}/v{int(version)}.ipynb live/{name}.ipynb"
        self._run(command)

    def remove_live(self, name: str) -> None:
        self._run(f"rm -f live/{validate_name(name)}.ipynb")

    def read(self, relative: str) -> bytes:
        container = self._container({self.volumes["dashboards"]: {"bind": "/dashboards", "mode": "ro"}})
        try:
            stream, _ = container.get_archive(f"/dashboards/{relative}")
            archive = io.BytesIO(b"".join(stream))
        finally:
            container.remove(force=True)
        with tarfile.open(fileobj=archive) as tar:
            return tar.extractfile(tar.next()).read()

    @staticmethod
    def _info(path: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(path)
        info.type, info.mode, info.size = kind, mode, size
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = int(time.time())
        return info

    def _too_big(self, path: str, max_bytes: int) -> DashboardError:
        return DashboardError(
            413, f"work/{path} dépasse {max_bytes} octets : un tableau de bord calcule ses "
            "résultats, il ne les transporte pas ; effacez les sorties et réessayez.",
            f"work/{path} is over {max_bytes} bytes: a dashboard computes its results, it does "
            "not carry them; clear the outputs and try again.")

    def _container(self, volumes: dict):
        try:
            return self.client.containers.create(
                project_resources.UTILITY_IMAGE, command=["true"], volumes=volumes,
                network_mode="none", labels={"org.hdshub.purpose": UTILITY_PURPOSE},
                name=f"hds-dashboard-copy-{self.slug}-{time.time_ns()}",
            )
        except docker.errors.ImageNotFound:
            raise DashboardError(
                503, f"L'image {project_resources.UTILITY_IMAGE} manque : lancez « hdshub images build ».",
                f"Image {project_resources.UTILITY_IMAGE} is missing: run 'hdshub images build'.") from None

    def _run(self, command: str) -> None:
        self.client.containers.run(
            project_resources.UTILITY_IMAGE, ["sh", "-c", f"cd /dashboards && {command}"], remove=True,
            user="0", cap_drop=["ALL"], network_mode="none", security_opt=["no-new-privileges:true"],
            volumes={self.volumes["dashboards"]: {"bind": "/dashboards", "mode": "rw"}},
            labels={"org.hdshub.purpose": UTILITY_PURPOSE},
        )
