"""Kit environment volumes (hub_config/hdshub/kit_environments.py) against the real engine:
copied from the image once, made again when a copy was cut short, never left half-made."""

from __future__ import annotations

import io
from pathlib import Path

import docker.errors
import pytest

from hdshub import images, kit_environments
from tests.integration.conftest import SLUG_PREFIX

BASE = "hdshub/base:latest"  # the smallest image holding an environment reports can use


@pytest.fixture
def kit(docker_client):
    name = f"{SLUG_PREFIX}kit"
    yield name
    for volume in docker_client.volumes.list(filters={"label": f"{kit_environments.KIT_LABEL}={name}"}):
        volume.remove(force=True)


def test_the_environment_is_the_images_own_copied_once_and_again_when_cut_short(docker_client, kit):
    content = docker_client.images.get(BASE).labels[images.HASH_LABEL]
    name = kit_environments.ensure(docker_client, kit, docker_client.images.get(BASE))
    assert name == kit_environments.volume_name(kit, content)
    volume = docker_client.volumes.get(name)
    assert volume.attrs["Labels"][images.HASH_LABEL] == content
    data = Path(volume.attrs["Mountpoint"])
    ready = data / kit_environments.READY_FILE
    assert ready.is_file() and (data / "bin" / "jupyterhub-singleuser").is_file()
    listing = docker_client.containers.run(BASE, ["sh", "-c", "cd /opt/hdshub/venv && find . | sort"],
                                           remove=True, network_mode="none").decode()
    copied = docker_client.containers.run(
        BASE, ["sh", "-c", "cd /opt/hdshub/venv && find . | sort"], remove=True, network_mode="none",
        volumes={name: {"bind": "/opt/hdshub/venv", "mode": "ro"}}).decode()
    assert copied.replace(f"./{kit_environments.READY_FILE}\n", "") == listing  # the same files

    assert kit_environments.ensure(docker_client, kit, docker_client.images.get(BASE)) == name  # ready: kept as it is
    assert docker_client.volumes.get(name).attrs["CreatedAt"] == volume.attrs["CreatedAt"]

    ready.unlink()  # as a copy cut short leaves it
    (data / "lib").rename(data / "lib-cut")
    assert kit_environments.ensure(docker_client, kit, docker_client.images.get(BASE)) == name
    assert ready.is_file() and (data / "lib").is_dir() and not (data / "lib-cut").exists()


def test_a_copy_that_cannot_import_what_reports_need_leaves_no_volume(docker_client, kit):
    # An image with hdshub's content label whose environment lacks papermill.
    dockerfile = f"FROM hdshub/rootfs:latest\nLABEL {images.HASH_LABEL}={'0' * 64}\n".encode()
    tag = f"hds-{kit}-broken:latest"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    try:
        with pytest.raises(docker.errors.ContainerError):
            kit_environments.ensure(docker_client, kit, docker_client.images.get(tag))
        assert not docker_client.volumes.list(filters={"label": f"{kit_environments.KIT_LABEL}={kit}"})
    finally:
        docker_client.images.remove(tag)


def test_an_image_from_elsewhere_keeps_its_own_files(docker_client, kit):
    dockerfile = b"FROM hdshub/rootfs:latest\n"
    tag = f"hds-{kit}-plain:latest"  # the same image as the rootfs: only the tag is removed
    image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    try:
        assert images.HASH_LABEL not in (image.labels or {})
        assert kit_environments.ensure(docker_client, kit, docker_client.images.get(tag)) is None
    finally:
        docker_client.images.remove(tag)


def test_older_builds_environments_go_and_the_current_stays(docker_client, kit):
    current = kit_environments.ensure(docker_client, kit, docker_client.images.get(BASE))
    old = docker_client.volumes.create(kit_environments.volume_name(kit, "f" * 64), labels={
        kit_environments.PURPOSE_LABEL: kit_environments.PURPOSE, kit_environments.KIT_LABEL: kit})
    assert kit_environments.prune(docker_client, kit, keep=current) == [old.name]
    assert [v.name for v in docker_client.volumes.list(
        filters={"label": f"{kit_environments.KIT_LABEL}={kit}"})] == [current]
