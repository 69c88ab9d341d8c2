"""What an administrator does to projects, through the hub REST API (used by the CLI).

Each operation checks everything it can before it writes, and undoes its own first write
if a later one fails, so that a refused command leaves nothing half-made.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path

import docker
import docker.errors

from . import naming, project_resources
from .hub_api import HubAPI, HubAPIError
from .kits import Kit
from .projects import ROLES, Project, role_group, roles_by_project
from .tiers import Tier

DATA_FILE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ManageError(ValueError):
    """A refused administrative command; the message says why and what to do."""


def get_project(api: HubAPI, slug: str) -> Project:
    group = api.get_group(naming.validate_slug(slug))
    project = Project.from_group(slug, group["properties"]) if group else None
    if project is None:
        raise ManageError(f"no project named {slug!r}: see 'hdshub project list'")
    return project


def check_new_project(
    tiers: dict[str, Tier], kits: dict[str, Kit], slug: str, tier: str, kit: str, title: str
) -> Project:
    """The project to create, or a refusal naming the bad argument; touches nothing."""
    naming.validate_slug(slug)
    if tier not in tiers:
        raise ManageError(f"unknown tier {tier!r}: expected one of {', '.join(sorted(tiers))}")
    if kit not in kits:
        raise ManageError(f"unknown kit {kit!r}: expected one of {', '.join(sorted(kits))}")
    if not title.strip():
        raise ManageError("--title must not be empty")
    return Project(slug=slug, title=title.strip(), tier=tier, kit=kit)


def create_project(api: HubAPI, project: Project) -> Project:
    if api.get_group(project.slug) is not None:
        raise ManageError(f"project or group {project.slug!r} already exists")
    api.create_group(project.slug)
    try:
        api.set_group_properties(project.slug, project.properties())
    except Exception:
        api.delete_group(project.slug)
        raise
    return project


def add_member(api: HubAPI, slug: str, username: str, role: str) -> None:
    if role not in ROLES:
        raise ManageError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    get_project(api, slug)
    if api.get_user(username) is None:
        raise ManageError(
            f"no user named {username!r}: create the account first "
            "('hdshub user add', or the user's first login through the identity provider)"
        )
    group = role_group(slug, role)
    if api.get_group(group) is None:
        api.create_group(group)
    api.add_group_users(group, [username])


def list_projects(api: HubAPI) -> list[tuple[Project, dict[str, list[str]]]]:
    """Every project with {role: [usernames]}."""
    groups = api.groups()
    members: dict[str, dict[str, list[str]]] = {}
    for group in groups:
        for slug, roles in roles_by_project([group["name"]]).items():
            for role in roles:
                members.setdefault(slug, {})[role] = sorted(group["users"])
    projects = []
    for group in groups:
        project = Project.from_group(group["name"], group["properties"])
        if project is not None:
            projects.append((project, members.get(project.slug, {})))
    return sorted(projects, key=lambda item: item[0].slug)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_data(api: HubAPI, client: docker.DockerClient, slug: str, source: Path, by: str) -> dict:
    """Copy a file into the project's read-only data volume and record its sha256.

    The file lands owned by root, mode 0444: even through a writable mount the notebook
    user (uid 1000) could not change it. A name already present is refused: raw data is
    immutable once imported.
    """
    project = get_project(api, slug)
    if not source.is_file():
        raise ManageError(f"{source}: no such file")
    name = source.name
    if not DATA_FILE_PATTERN.match(name):
        raise ManageError(
            f"file name {name!r} not accepted: use letters, digits, '.', '_' and '-' "
            "(128 characters at most), then import again"
        )
    if any(d["name"] == name for d in project.datasets):
        raise ManageError(f"{name!r} is already in project {slug}: raw data is never replaced")
    sha256 = sha256_of(source)
    volumes = project_resources.ensure_volumes(client.api, slug)
    size = source.stat().st_size

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tar.gettarinfo(str(source), arcname=name)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o444
        with open(source, "rb") as f:
            tar.addfile(info, f)
    archive.seek(0)

    container = _data_container(client, volumes["data"])
    try:
        container.put_archive("/data", archive.getvalue())
        dataset = {
            "name": name,
            "sha256": sha256,
            "size": size,
            "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "imported_by": by,
        }
        properties = project.properties()
        properties["datasets"].append(dataset)
        try:
            api.set_group_properties(slug, properties)
        except Exception:
            _remove_file(client, volumes["data"], name)
            raise
    finally:
        container.remove(force=True)
    return dataset


def _data_container(client: docker.DockerClient, volume: str):
    """A never-started container that only gives `put_archive` access to the volume."""
    try:
        return client.containers.create(
            project_resources.UTILITY_IMAGE,
            command=["true"],
            volumes={volume: {"bind": "/data", "mode": "rw"}},
            network_mode="none",
            labels={"org.hdshub.purpose": "data-import"},
            name=f"hds-import-{int(time.time() * 1000)}",
        )
    except docker.errors.ImageNotFound:
        raise ManageError(f"image {project_resources.UTILITY_IMAGE} is missing: run 'hdshub images build'") from None


def _remove_file(client: docker.DockerClient, volume: str, name: str) -> None:
    client.containers.run(
        project_resources.UTILITY_IMAGE, ["rm", "-f", f"/data/{name}"], remove=True, user="0", cap_drop=["ALL"],
        volumes={volume: {"bind": "/data", "mode": "rw"}}, network_mode="none",
    )


__all__ = [
    "ManageError", "HubAPIError", "get_project", "check_new_project", "create_project", "add_member",
    "list_projects", "import_data",
]
