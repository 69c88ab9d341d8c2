"""Where a requested path really points: raw data, an exact copy of it, or anything else.

Decisions use the file system's answer (realpath), never the spelling of the request, so
symlinks, '..', doubled slashes and encodings all end up at the same place. Hard links from
work/ cannot reach raw data: it is a separate read-only mount, and link() never crosses mounts.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
from urllib.parse import unquote

from .policy import Policy

#: How many times a path is percent-decoded when looking for a hidden raw-data path.
DECODE_ROUNDS = 3


@functools.lru_cache(maxsize=1024)  # the gate, the contents rules and the trail ask each request's
def spellings(path: str) -> tuple[str, ...]:
    """The path as given and every percent-decoding of it, normalised ('//', '.', '..')."""
    seen = []
    current = path
    for _ in range(DECODE_ROUNDS + 1):
        normal = posixpath.normpath("/" + current.replace("\\", "/")).lstrip("/")
        if normal not in seen:
            seen.append(normal)
        decoded = unquote(current)
        if decoded == current:
            break
        current = decoded
    return tuple(seen)


class PathJudge:
    def __init__(self, root_dir: str, policy: Policy):
        self.root = os.path.realpath(root_dir)
        self.policy = policy
        self.raw_root = os.path.realpath(os.path.join(self.root, policy.raw_data_dir))
        self._raw_name = policy.raw_data_dir.casefold()

    def os_path(self, api_path: str) -> str:
        """Where the path really points (every link resolved): what decisions are made on.
        Costs a system call per path component, tens of microseconds each in a container."""
        return os.path.realpath(os.path.join(self.root, api_path.lstrip("/")))

    def named_path(self, api_path: str) -> str:
        """The path as the request names it under the root, links not resolved: enough to
        stat or read the file the request named (the kernel follows links itself), never
        to decide whether it is raw data."""
        return os.path.join(self.root, posixpath.normpath("/" + api_path).lstrip("/"))

    def resolve(self, api_path: str) -> tuple[str, bool]:
        """(os_path, whether the path is raw data) with one resolution in the common case;
        a path with encodings or backslashes has every spelling resolved (is_raw)."""
        real = self.os_path(api_path)
        tricky = "%" in api_path or "\\" in api_path
        return real, self.is_raw_real(real) or (tricky and self.is_raw(api_path))

    def is_raw(self, api_path: str) -> bool:
        """True if any spelling of the path resolves to the raw-data folder or inside it."""
        return any(self.is_raw_real(self.os_path(spelling)) for spelling in spellings(api_path))

    def is_raw_real(self, real: str) -> bool:
        """True if a resolved path (os_path) is the raw-data folder or inside it."""
        if real == self.raw_root or real.startswith(self.raw_root + os.sep):
            return True
        # Case tricks: the file system is case-sensitive, but a client or a future mount
        # may not be; refuse any spelling that only differs by case.
        if not real.startswith(self.root + os.sep):
            return False  # outside the root: not a path under data/ whatever its case
        return real[len(self.root) + 1:].split(os.sep, 1)[0].casefold() == self._raw_name

    def is_raw_file(self, api_path: str) -> bool:
        return self.is_raw(api_path) and not os.path.isdir(self.os_path(api_path))

    def copied_dataset(self, os_path: str) -> str | None:
        """The name of the raw dataset this file is a byte-for-byte copy of, if any.

        Only files whose size equals a dataset's are hashed, so most files cost one stat.
        """
        try:
            size = os.stat(os_path).st_size
        except OSError:
            return None
        if size not in self.policy.dataset_sizes:
            return None
        try:
            fd = os.open(os_path, os.O_RDONLY)
        except OSError:
            return None
        try:
            return self.copied_dataset_of(fd)
        finally:
            os.close(fd)

    def copied_dataset_of(self, fd: int) -> str | None:
        """The same for a file already open: judged by what was opened, whatever its path
        names by now (pread leaves the reader's position alone)."""
        size = os.fstat(fd).st_size
        if size not in self.policy.dataset_sizes:
            return None
        digest, offset = hashlib.sha256(), 0
        while block := os.pread(fd, 1 << 20, offset):
            digest.update(block)
            offset += len(block)
        return self.policy.dataset_digests.get(digest.hexdigest())

    def opened_path(self, fd: int) -> str:
        """Where an open file really is, from the kernel (no path to race against)."""
        return os.readlink(f"/proc/self/fd/{fd}")
