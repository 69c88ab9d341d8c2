"""Content hashes decide what `hdshub images build` rebuilds; no Docker needed here."""

import shutil
from pathlib import Path

import pytest

from hdshub import images
from hdshub.images import (
    ImageBuildError,
    build_images,
    build_order,
    content_hashes,
    image_specs,
    kit_image_tag,
    read_lock,
)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A copy of the files the images are built from."""
    for folder in ("images", "extensions", "stats_kits"):
        shutil.copytree(images.REPO_ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def hashes(root: Path) -> dict[str, str]:
    return content_hashes(image_specs(root), root)


def test_images_in_dependency_order():
    assert list(images.IMAGES)[:2] == ["rootfs", "base"]
    assert images.IMAGES["rootfs"] is None
    assert images.IMAGES["base"] == "rootfs"
    assert images.IMAGES["python-stats"] == "base"
    order = list(images.IMAGES)
    for name, parent in images.IMAGES.items():
        if parent is not None:
            assert order.index(parent) < order.index(name)


def test_a_kit_brings_its_ancestors_and_nothing_else(repo):
    shutil.copytree(repo / "stats_kits/python-stats", repo / "stats_kits/other-kit")
    specs = image_specs(repo)
    assert build_order(["python-stats"], specs) == ["rootfs", "base", "python-stats"]
    assert build_order(None, specs) == ["rootfs", "base", "rootfs-r", "base-r", "other-kit",
                                        "python-stats", "r-stats"]


def test_unknown_kit_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown kit 'nope': known kits are python-stats"):
        build_order(["nope"], image_specs())
    with pytest.raises(ValueError, match="known kits are python-stats"):
        kit_image_tag("nope")
    with pytest.raises(ValueError, match="unknown kit 'base'"):
        build_images(["base"])  # refused before Docker is reached


def test_kit_image_tag():
    assert kit_image_tag("python-stats") == "hdshub/python-stats:latest"


def test_hashes_are_stable(repo):
    assert hashes(repo) == hashes(repo)
    assert all(len(value) == 64 for value in hashes(repo).values())


def test_a_server_config_change_rebuilds_base_and_kits_not_rootfs(repo):
    before = hashes(repo)
    config = repo / "images/base/jupyter_server_config.json"
    config.write_text(config.read_text() + "\n")
    after = hashes(repo)
    assert after["rootfs"] == before["rootfs"]
    assert after["base"] != before["base"]
    assert after["python-stats"] != before["python-stats"]


def test_the_guard_is_not_in_any_image(repo):
    """The guard is mounted from the hub's release: changing it rebuilds nothing."""
    before = hashes(repo)
    guard = repo / "extensions/hdshub_guard/__init__.py"
    guard.write_text(guard.read_text() + "\n# changed\n")
    assert hashes(repo) == before


def test_bytecode_and_docs_do_not_count(repo):
    before = hashes(repo)
    cache = repo / "images/base/__pycache__"
    cache.mkdir()
    (cache / "x.cpython-311.pyc").write_bytes(b"local artefact")
    (repo / "images/base/README.md").write_text("documentation only")
    assert hashes(repo) == before


def test_a_kit_lock_change_rebuilds_that_kit_only(repo):
    before = hashes(repo)
    lock = repo / "stats_kits/python-stats/requirements.txt"
    lock.write_text(lock.read_text() + "\n")
    after = hashes(repo)
    assert after["rootfs"] == before["rootfs"]
    assert after["base"] == before["base"]
    assert after["python-stats"] != before["python-stats"]


def test_a_rootfs_change_rebuilds_everything(repo):
    before = hashes(repo)
    packages = repo / "images/rootfs/packages.txt"
    packages.write_text(packages.read_text() + "less\n")
    after = hashes(repo)
    on_plain_rootfs = {"rootfs", "base", "python-stats"}
    assert all(after[name] != before[name] for name in on_plain_rootfs)
    assert all(after[name] == before[name] for name in set(before) - on_plain_rootfs)


def test_locks_are_fully_pinned_and_agree():
    base = read_lock(images.REPO_ROOT / "images/base/requirements.txt")
    kit = read_lock(images.REPO_ROOT / "stats_kits/python-stats/requirements.txt")
    assert base["jupyterhub"] == "6.1.1"
    assert {name: kit[name] for name in base} == base


def test_an_unpinned_lock_is_refused(tmp_path):
    lock = tmp_path / "requirements.txt"
    lock.write_text("numpy>=2  # via hand\n")
    with pytest.raises(ImageBuildError, match="not pinned as name==version"):
        read_lock(lock)


class FakeImages:
    """Just enough of docker's ImageCollection: images by tag."""

    def __init__(self, by_tag):
        self.by_tag = by_tag

    def get(self, tag):
        import docker.errors

        if tag not in self.by_tag:
            raise docker.errors.ImageNotFound(tag)
        return self.by_tag[tag]


class FakeImage:
    def __init__(self, image_id, labels):
        self.id, self.labels = image_id, labels


def test_up_to_date_means_the_hash_tag_with_the_same_label():
    spec = image_specs()["base"]
    content = "a" * 64
    tag = f"hdshub/base:{content[:12]}"
    fake = type("Client", (), {})()

    # A kit's build stage inherits base's labels but never carries base's tag: not base.
    fake.images = FakeImages({})
    assert images._is_built(fake, spec, content) is None
    fake.images = FakeImages({tag: FakeImage("sha256:1", {images.HASH_LABEL: content})})
    assert images._is_built(fake, spec, content) == "sha256:1"
    fake.images = FakeImages({tag: FakeImage("sha256:2", {images.HASH_LABEL: "b" * 64})})
    assert images._is_built(fake, spec, content) is None


def test_a_failed_build_reports_the_end_of_its_log():
    chunks = [
        {"stream": "Step 1/2 : FROM hdshub/base:abc\n"},
        {"stream": "Step 2/2 : RUN ls /nonexistent\n \x1b[91mls: cannot access '/nonexist"},
        {"stream": "ent': No such file or directory\n\x1b[0m"},
        {"error": "The command '/bin/sh -c ls /nonexistent' returned a non-zero code: 2"},
    ]
    fake = type("Client", (), {})()
    fake.api = type("API", (), {"build": staticmethod(lambda **kwargs: iter(chunks))})()
    shown = []
    with pytest.raises(ImageBuildError) as failure:
        images._docker_build(fake, image_specs()["base"], Path("/nowhere"), "hdshub/base:x",
                             {}, {}, shown.append)
    assert shown == ["[base] Step 1/2 : FROM hdshub/base:abc", "[base] Step 2/2 : RUN ls /nonexistent"]
    message = str(failure.value)
    assert "ls: cannot access '/nonexistent': No such file or directory" in message
    assert message.endswith("returned a non-zero code: 2")
    assert "\x1b" not in message
