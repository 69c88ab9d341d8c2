"""Build the single-user images: rootfs -> base -> one image per statistics kit.

A health-data host usually has no image registry, so every image is made on the host: the
root file system from Debian's packages (images/rootfs/build-rootfs.sh), Python packages from
a wheelhouse downloaded with pip against pinned locks. An image is rebuilt only when its
inputs change: its content hash covers its Dockerfile, locks and copied files, and its
parent's hash, and is kept on the image (label, or tag for the imported rootfs).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_ENV = "HDSHUB_CACHE"
DEFAULT_CACHE = Path("/var/cache/hdshub")

#: Target of every lock and wheel: Debian bookworm's CPython on x86_64.
PYTHON_VERSION = "3.11"
WHEEL_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")

NAME_LABEL = "org.hdshub.image"
HASH_LABEL = "org.hdshub.content-hash"
HASH_TAG_LENGTH = 12
TAIL_LINES = 40
_TERMINAL_COLOURS = re.compile(r"\x1b\[[0-9;]*m")

Progress = Callable[[str], object]


class ImageBuildError(RuntimeError):
    """A build step failed; the message carries the end of its log."""


@dataclass(frozen=True)
class ImageSpec:
    """What an image is built from.

    `inputs` maps a path in the build context to a file or folder of the repository; the
    content hash covers exactly these files, and the build context holds exactly them (plus
    `wheels/` when the image has a lock).
    """

    name: str
    repository: str
    parent: str | None
    inputs: tuple[tuple[str, str], ...]
    lock: str | None = None  # context path of the pinned requirements installed from wheels
    kind: str = "kit"  # "rootfs" (debootstrap), "base" (the venv), or "kit"


@dataclass(frozen=True)
class BuildResult:
    name: str
    tag: str
    status: str  # "built" or "up-to-date"


def _variant_suffix(variant: str | None) -> str:
    return f"-{variant}" if variant else ""


def rootfs_variants(root: Path = REPO_ROOT) -> list[str | None]:
    """Return the root file system variants: None for images/rootfs/packages.txt, then "r" for
    packages-r.txt and so on. A variant is keyed by its package list and has its own base."""
    variants: list[str | None] = [None]
    for path in sorted((root / "images/rootfs").glob("packages-*.txt")):
        variants.append(path.stem.removeprefix("packages-"))
    return variants


def image_specs(root: Path = REPO_ROOT) -> dict[str, ImageSpec]:
    """Return every image in build order: each rootfs variant and its base, then one per kit
    of stats_kits/ (on the base of the variant its manifest names, default the plain one)."""
    specs: dict[str, ImageSpec] = {}
    for variant in rootfs_variants(root):
        suffix = _variant_suffix(variant)
        specs[f"rootfs{suffix}"] = ImageSpec(
            name=f"rootfs{suffix}",
            repository=f"hdshub/rootfs{suffix}",
            parent=None,
            inputs=(
                ("build-rootfs.sh", "images/rootfs/build-rootfs.sh"),
                ("packages.txt", f"images/rootfs/packages{suffix}.txt"),
            ),
            kind="rootfs",
        )
        specs[f"base{suffix}"] = ImageSpec(
            name=f"base{suffix}",
            repository=f"hdshub/base{suffix}",
            parent=f"rootfs{suffix}",
            inputs=(
                ("Dockerfile", "images/base/Dockerfile"),
                ("requirements.txt", "images/base/requirements.txt"),
                ("jupyter_server_config.json", "images/base/jupyter_server_config.json"),
            ),
            lock="requirements.txt",
            kind="base",
        )
    for manifest_path in sorted((root / "stats_kits").glob("*/manifest.yaml")):
        manifest = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
        kit = manifest_path.parent.name
        lock = manifest_path.parent / manifest["requirements"]
        parent = f"base{_variant_suffix(manifest.get('rootfs'))}"
        if parent not in specs:
            raise ValueError(
                f"{manifest_path}: key 'rootfs': no images/rootfs/packages-{manifest['rootfs']}.txt")
        specs[kit] = ImageSpec(
            name=kit,
            repository=manifest["image"],
            parent=parent,
            inputs=(
                ("Dockerfile", f"images/{kit}/Dockerfile"),
                ("requirements.txt", lock.relative_to(root).as_posix()),
            ),
            lock="requirements.txt",
        )
    return specs


#: Parent map in build order (rootfs -> base -> kits), as found in this repository.
IMAGES: dict[str, str | None] = {name: spec.parent for name, spec in image_specs().items()}


def kit_image_tag(kit: str) -> str:
    """Return the tag the spawner runs for `kit`, e.g. "hdshub/python-stats:latest"."""
    specs = image_specs()
    if kit not in _kit_names(specs):
        raise ValueError(_unknown_kit_message(kit, specs))
    return f"{specs[kit].repository}:latest"


def _kit_names(specs: dict[str, ImageSpec]) -> list[str]:
    return [name for name, spec in specs.items() if spec.kind == "kit"]


def _unknown_kit_message(kit: str, specs: dict[str, ImageSpec]) -> str:
    known = ", ".join(_kit_names(specs)) or "none"
    return f"unknown kit {kit!r}: known kits are {known} (stats_kits/<kit>/manifest.yaml)"


def build_order(kits: list[str] | None, specs: dict[str, ImageSpec]) -> list[str]:
    """Return the images to build for `kits` (None: all), ancestors first."""
    if kits is None:
        return list(specs)
    wanted: set[str] = set()
    for kit in kits:
        if kit not in _kit_names(specs):
            raise ValueError(_unknown_kit_message(kit, specs))
        name: str | None = kit
        while name is not None:
            wanted.add(name)
            name = specs[name].parent
    return [name for name in specs if name in wanted]


def _input_files(spec: ImageSpec, root: Path) -> Iterator[tuple[str, Path]]:
    """Yield (context path, file) for every input file, in a stable order."""
    for context_path, repo_path in spec.inputs:
        source = root / repo_path
        if source.is_dir():
            for path in sorted(source.rglob("*")):
                relative = path.relative_to(source)
                if path.is_file() and not _is_ignored(relative):
                    yield f"{context_path}/{relative.as_posix()}", path
        elif source.is_file():
            yield context_path, source
        else:
            raise ImageBuildError(f"[{spec.name}] input {repo_path} is missing from {root}")


def _is_ignored(relative: Path) -> bool:
    """Local artefacts and documentation: neither in the hash nor in the build context."""
    return (
        any(part == "__pycache__" or part.endswith(".egg-info") or part.startswith(".")
            for part in relative.parts)
        or relative.suffix in (".pyc", ".md")
    )


def content_hash(spec: ImageSpec, parent_hash: str | None, root: Path = REPO_ROOT) -> str:
    """Return the sha256 of the image's inputs, its build recipe and its parent's hash."""
    digest = hashlib.sha256()
    digest.update(f"hdshub-image 1\nname {spec.name}\nparent {parent_hash or '-'}\n".encode())
    if spec.lock:
        digest.update(f"python {PYTHON_VERSION}\nplatforms {' '.join(WHEEL_PLATFORMS)}\n".encode())
    for context_path, path in _input_files(spec, root):
        executable = "x" if os.access(path, os.X_OK) else "-"
        file_digest = hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(f"file {context_path} {executable} {file_digest}\n".encode())
    return digest.hexdigest()


def content_hashes(specs: dict[str, ImageSpec], root: Path = REPO_ROOT) -> dict[str, str]:
    """Return every image's content hash; a parent's hash feeds its children's."""
    hashes: dict[str, str] = {}
    for name, spec in specs.items():
        hashes[name] = content_hash(spec, hashes[spec.parent] if spec.parent else None, root)
    return hashes


def read_lock(path: Path) -> dict[str, str]:
    """Return {canonical name: version} of a fully pinned requirements file."""
    pins = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            raise ImageBuildError(f"{path}:{number}: {error}") from None
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or requirement.marker:
            raise ImageBuildError(
                f"{path}:{number}: {line!r} is not pinned as name==version: regenerate the "
                "lock with images/update-locks.sh"
            )
        pins[canonicalize_name(requirement.name)] = str(Version(specifiers[0].version))
    return pins


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def _target_tags() -> frozenset[Tag]:
    """Return the wheel tags the images' interpreter accepts (CPython 3.11, glibc 2.36, x86_64)."""
    version = tuple(int(part) for part in PYTHON_VERSION.split("."))
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    interpreter = "cp" + PYTHON_VERSION.replace(".", "")
    return frozenset(
        [*cpython_tags(version, abis=[interpreter], platforms=platforms),
         *compatible_tags(version, interpreter=interpreter, platforms=platforms)]
    )


def _wheel_index(wheelhouse: Path) -> dict[tuple[str, str], list[Path]]:
    """Index the wheelhouse's wheels that fit the images by (canonical name, version)."""
    accepted = _target_tags()
    index: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(wheelhouse.glob("*.whl")):
        try:
            name, version, _build, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        if tags & accepted:
            index.setdefault((name, str(version)), []).append(path)
    return index


def _find_wheels(pins: dict[str, str], wheelhouse: Path) -> tuple[list[Path], dict[str, str]]:
    """Return (wheels present for the pins, pins that have none)."""
    index = _wheel_index(wheelhouse)
    found: list[Path] = []
    missing: dict[str, str] = {}
    for name, version in pins.items():
        wheels = index.get((name, version))
        if wheels:
            found.extend(wheels)
        else:
            missing[name] = version
    return found, missing


def ensure_wheels(name: str, pins: dict[str, str], wheelhouse: Path, progress: Progress) -> list[Path]:
    """Return the wheels of `pins`, downloading into the wheelhouse those it lacks."""
    wheels, missing = _find_wheels(pins, wheelhouse)
    if not missing:
        progress(f"[{name}] wheels: {len(pins)} pinned, all in {wheelhouse}")
        return wheels
    progress(f"[{name}] downloading {len(missing)} of {len(pins)} wheels into {wheelhouse}…")
    started = time.monotonic()
    wheelhouse.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="hdshub-pins-") as requirements:
        requirements.write("".join(f"{pkg}=={version}\n" for pkg, version in sorted(missing.items())))
        requirements.flush()
        command = [
            sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
            "--only-binary=:all:", "--no-deps", "--python-version", PYTHON_VERSION,
            "--implementation", "cp", "--abi", "cp" + PYTHON_VERSION.replace(".", ""),
            *(arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)),
            "--dest", str(wheelhouse), "--requirement", requirements.name,
        ]
        _run(name, "pip download", command, progress, echo=lambda line: line.startswith("ERROR"))
    wheels, still_missing = _find_wheels(pins, wheelhouse)
    if still_missing:
        listed = ", ".join(f"{pkg}=={version}" for pkg, version in sorted(still_missing.items()))
        raise ImageBuildError(f"[{name}] pip download left no wheel for: {listed}")
    progress(f"[{name}] downloaded {len(missing)} wheels in {time.monotonic() - started:.0f} s")
    return wheels


def _run(name: str, what: str, command: list[str], progress: Progress,
         echo: Callable[[str], bool]) -> None:
    """Run a command, show the lines `echo` selects, raise with the log's tail on failure."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            tail.append(line)
            if echo(line):
                progress(line if line.startswith(f"[{name}]") else f"[{name}] {line}")
    if process.returncode != 0:
        log = "\n".join(tail)
        raise ImageBuildError(f"[{name}] {what} failed (exit {process.returncode}); last lines:\n{log}")


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _stage_context(
    spec: ImageSpec, root: Path, wheels: list[Path], staging_root: Path
) -> tempfile.TemporaryDirectory:
    """Return a temporary build context holding exactly the image's inputs and wheels."""
    staging_root.mkdir(parents=True, exist_ok=True)
    context = tempfile.TemporaryDirectory(prefix=f"{spec.name}-", dir=staging_root)
    base = Path(context.name)
    for context_path, path in _input_files(spec, root):
        _link_or_copy(path, base / context_path)
    (base / "wheels").mkdir(exist_ok=True)
    for wheel in wheels:
        _link_or_copy(wheel, base / "wheels" / wheel.name)
    return context


def _build_rootfs(spec: ImageSpec, tag: str, root: Path, progress: Progress) -> None:
    inputs = dict(spec.inputs)
    script, packages = root / inputs["build-rootfs.sh"], root / inputs["packages.txt"]
    _run(spec.name, "build-rootfs.sh", ["bash", str(script), tag, str(packages)], progress,
         echo=lambda line: line.startswith("[rootfs]"))


def _docker_build(client, spec: ImageSpec, context: Path, tag: str, buildargs: dict[str, str],
                  labels: dict[str, str], progress: Progress) -> str:
    """Build with the classic builder, show each step, return the image id."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    image_id = None
    pending = ""  # the stream may cut a line in two chunks
    for chunk in client.api.build(path=str(context), tag=tag, buildargs=buildargs, labels=labels,
                                  rm=True, forcerm=True, pull=False, decode=True):
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        pending += _TERMINAL_COLOURS.sub("", chunk.get("stream", ""))
        *lines, pending = pending.split("\n")
        for line in filter(None, (line.rstrip() for line in lines)):
            tail.append(line)
            if line.startswith("Step "):
                progress(f"[{spec.name}] {line[:140]}")
        if "error" in chunk:
            tail.extend(filter(None, [pending.rstrip(), chunk["error"].rstrip()]))
            log = "\n".join(tail)
            raise ImageBuildError(f"[{spec.name}] docker build failed; last lines:\n{log}")
    if image_id is None:
        image_id = client.images.get(tag).id
    return image_id


def _build_args(spec: ImageSpec, specs: dict[str, ImageSpec], hashes: dict[str, str]) -> dict[str, str]:
    """Return the build arguments: the parent, by its content tag (never a moving :latest)."""
    parent = specs[spec.parent] if spec.parent else None
    if parent is None:
        return {}
    return {"BASE_IMAGE": f"{parent.repository}:{hashes[parent.name][:HASH_TAG_LENGTH]}"}


def _labels(spec: ImageSpec, content: str, pins: dict[str, str]) -> dict[str, str]:
    """Return the image's labels; a kit inherits the versions from the base's labels.

    Set through the build API (one step) rather than ARG/LABEL lines (one step each).
    """
    labels = {NAME_LABEL: spec.name, HASH_LABEL: content}
    if spec.kind == "base":
        labels.update({
            "org.hdshub.python": PYTHON_VERSION,
            "org.hdshub.jupyterhub": pins.get("jupyterhub", "unknown"),
            "org.hdshub.jupyterlab": pins.get("jupyterlab", "unknown"),
        })
    return labels


def _check_against_parent(spec: ImageSpec, pins: dict[str, str], parent_pins: dict[str, str]) -> None:
    drift = sorted(
        f"{pkg} {version} (base {parent_pins[pkg]})"
        for pkg, version in pins.items()
        if pkg in parent_pins and parent_pins[pkg] != version
    )
    if drift:
        raise ImageBuildError(
            f"[{spec.name}] the lock differs from its parent's for: {', '.join(drift)}. "
            "Regenerate the locks together: images/update-locks.sh"
        )


def _lock_pins(spec: ImageSpec | None, root: Path) -> dict[str, str]:
    if spec is None or spec.lock is None:
        return {}
    repo_path = dict(spec.inputs)[spec.lock]
    return read_lock(root / repo_path)


def _is_built(client, spec: ImageSpec, content: str) -> str | None:
    """Return the id of the image tagged with this content hash, if it was built from it.

    Looked up by tag, never by label alone: the build stages of a child image inherit their
    parent's labels and would otherwise pass for it.
    """
    import docker.errors

    try:
        image = client.images.get(f"{spec.repository}:{content[:HASH_TAG_LENGTH]}")
    except docker.errors.ImageNotFound:
        return None
    if spec.kind != "rootfs" and image.labels.get(HASH_LABEL) != content:
        return None
    return image.id


def build_images(
    kits: list[str] | None = None,
    *,
    force: bool = False,
    progress: Progress = print,
    root: Path = REPO_ROOT,
) -> list[BuildResult]:
    """Build the images `kits` need (None: every image), ancestors first.

    Skip an image whose inputs did not change unless `force`; tag each image
    `<repository>:<hash12>` and `<repository>:latest`.
    """
    import docker

    specs = image_specs(root)
    order = build_order(kits, specs)
    hashes = content_hashes(specs, root)
    try:
        client = docker.from_env(timeout=3600)
        client.ping()
    except docker.errors.DockerException as error:
        raise ImageBuildError(
            f"cannot reach the Docker Engine ({error}): start it, or run as a user allowed to "
            "use /var/run/docker.sock"
        ) from None
    cache = cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ImageBuildError(
            f"cannot create the wheel cache {cache} ({error.strerror}): run as root or set "
            f"{CACHE_ENV} to a writable folder"
        ) from None
    results = []
    for name in order:
        spec = specs[name]
        content = hashes[name]
        tag = f"{spec.repository}:{content[:HASH_TAG_LENGTH]}"
        existing = None if force else _is_built(client, spec, content)
        if existing:
            client.api.tag(existing, spec.repository, content[:HASH_TAG_LENGTH])
            client.api.tag(existing, spec.repository, "latest")
            progress(f"[{name}] up to date: {tag}")
            results.append(BuildResult(name, tag, "up-to-date"))
            continue
        started = time.monotonic()
        if spec.kind == "rootfs":
            _build_rootfs(spec, tag, root, progress)
            image_id = client.images.get(tag).id
        else:
            pins = _lock_pins(spec, root)
            parent_pins = _lock_pins(specs[spec.parent] if spec.parent else None, root)
            _check_against_parent(spec, pins, parent_pins)
            own_pins = {pkg: version for pkg, version in pins.items() if pkg not in parent_pins}
            wheels = ensure_wheels(name, own_pins, cache / "wheels", progress)
            progress(f"[{name}] docker build {tag} ({len(wheels)} wheels in the context)…")
            with _stage_context(spec, root, wheels, cache / "staging") as context:
                image_id = _docker_build(client, spec, Path(context), tag,
                                         _build_args(spec, specs, hashes),
                                         _labels(spec, content, pins), progress)
            built = client.images.get(image_id)
            if built.labels.get(HASH_LABEL) != content:
                raise ImageBuildError(f"[{name}] built image lacks label {HASH_LABEL}={content}")
        client.api.tag(image_id, spec.repository, "latest")
        progress(f"[{name}] built {tag} in {time.monotonic() - started:.0f} s")
        results.append(BuildResult(name, tag, "built"))
    _ensure_kit_environments(client, [name for name in order if specs[name].kind == "kit"], hashes, specs, progress)
    return results


def _ensure_kit_environments(client, kits: list[str], hashes: dict[str, str], specs: dict[str, ImageSpec],
                             progress: Progress) -> None:
    """Each kit's environment volume for report runs (kit_environments.py), made now rather
    than at the first report; those of older builds of the kit go."""
    from . import kit_environments

    for kit in kits:
        tag = f"{specs[kit].repository}:{hashes[kit][:HASH_TAG_LENGTH]}"
        started = time.monotonic()
        name = kit_environments.ensure(client, kit, client.images.get(tag))
        for old in kit_environments.prune(client, kit, keep=name):
            progress(f"[{kit}] removed the environment volume of an older build: {old}")
        progress(f"[{kit}] environment volume for reports: {name} ({time.monotonic() - started:.0f} s)")
