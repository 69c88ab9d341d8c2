"""A kit's Python environment copied onto a Docker volume, mounted read-only by report runs.

A report run is a fresh container, and with Docker's fuse-overlayfs storage driver (rootless
Docker, and this project's test machines) every file a fresh container opens from its image
goes through a new FUSE mount with nothing cached yet. Papermill, nbconvert, WeasyPrint and
the kernel's pandas, SciPy and matplotlib then cost a report about a second more than the
same imports on the host (benchmarks/reports.py). Files on a volume are read straight from
the host's file system, whatever the storage driver.

The volume holds exactly the image's /opt/hdshub/venv: Docker copies it there when the empty
volume is first mounted. Its name carries the image's content hash, so a rebuilt kit gets a
new one and a run never mixes an image with another image's packages. The copy is complete
only once READY_FILE, written last, is there; a volume without it (a copy cut short) is
made again. Project servers keep their image's own files: they start once and stay up.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import docker
import docker.errors

from . import images

log = logging.getLogger("hdshub.kit_environments")

ENVIRONMENT_PATH = "/opt/hdshub/venv"
READY_FILE = ".hdshub-environment-ready"
PURPOSE_LABEL, PURPOSE = "org.hdshub.purpose", "kit-environment"
KIT_LABEL = "org.hdshub.kit"
PREFIX = "hdshub-env-"
#: What the copy must be able to import before it is declared ready (every kit renders
#: reports with them).
CHECK_IMPORTS = "import papermill, nbconvert, weasyprint"

_lock = threading.Lock()  # one copy at a time in this process: a second would see a half copy


def volume_name(kit: str, content_hash: str) -> str:
    return f"{PREFIX}{kit}-{content_hash[:images.HASH_TAG_LENGTH]}"


def ensure(client: docker.DockerClient, kit: str, image) -> str | None:
    """The name of the ready environment volume of `image` (a docker-py Image of kit `kit`),
    copied now if needed (about a minute for python-stats, once per image content); None for
    an image without hdshub's content label (one from a registry): its runs then read the
    image's own files."""
    content = (image.labels or {}).get(images.HASH_LABEL)
    if not content:
        return None
    name = volume_name(kit, content)
    with _lock:
        try:
            volume = client.volumes.get(name)
        except docker.errors.NotFound:
            volume = None
        if volume is not None and _is_ready(client, volume, image):
            return name
        if volume is not None:
            log.warning("hdshub: kit environment %s is incomplete, copying it again", name)
            volume.remove(force=True)
        _copy(client, name, kit, content, image)
    return name


def _is_ready(client: docker.DockerClient, volume, image) -> bool:
    """READY_FILE is in the volume: read on the host when the hub shares the engine's file
    system, else asked of a container that only lists it."""
    mountpoint = Path(volume.attrs.get("Mountpoint") or "/nonexistent")
    try:
        if mountpoint.is_dir():
            return (mountpoint / READY_FILE).is_file()
    except PermissionError:
        pass  # a hub that is not root: Docker's folders are closed to it
    try:
        client.containers.run(image.id, ["test", "-f", f"{ENVIRONMENT_PATH}/{READY_FILE}"], remove=True,
                              network_mode="none", volumes={volume.name: {"bind": ENVIRONMENT_PATH, "mode": "ro"}},
                              cap_drop=["ALL"], security_opt=["no-new-privileges:true"])
        return True
    except docker.errors.ContainerError:
        return False


def _copy(client: docker.DockerClient, name: str, kit: str, content: str, image) -> None:
    """Create the volume, let Docker copy the image's environment into it at the first
    mount, check it imports what reports need, then mark it ready."""
    client.volumes.create(name, labels={PURPOSE_LABEL: PURPOSE, KIT_LABEL: kit, images.HASH_LABEL: content})
    try:
        client.containers.run(
            image.id, ["sh", "-c", f"python3 -c '{CHECK_IMPORTS}' && touch {ENVIRONMENT_PATH}/{READY_FILE}"],
            user="0", remove=True, network_mode="none",
            volumes={name: {"bind": ENVIRONMENT_PATH, "mode": "rw"}},
            cap_drop=["ALL"], security_opt=["no-new-privileges:true"])
    except docker.errors.DockerException:
        client.volumes.get(name).remove(force=True)  # nothing half-copied stays behind
        raise


def prune(client: docker.DockerClient, kit: str, keep: str | None) -> list[str]:
    """Remove the kit's environment volumes of other image contents than `keep` (a volume
    a report run still mounts stays until the next build)."""
    removed = []
    for volume in client.volumes.list(filters={"label": [f"{PURPOSE_LABEL}={PURPOSE}", f"{KIT_LABEL}={kit}"]}):
        if volume.name == keep:
            continue
        try:
            volume.remove()
            removed.append(volume.name)
        except docker.errors.APIError:
            pass  # in use
    return removed
