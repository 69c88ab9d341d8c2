"""The contents manager every route reads and writes files through, with the policy's rules.

The gate (gate.py) already refuses what the request line shows; here the rules that need
the file or the request body: exact copies of raw datasets, the size the browser may open,
upload sizes and kinds, notebook sizes, and copies or renames that involve raw data.
JupyterLab's file browser, nbconvert and Voilà all read files through this class.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import os
from contextlib import contextmanager

import nbformat
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web

from . import messages, quota
from .audit import sha256_of
from .paths import PathJudge
from .policy import Policy
from .state import guard

#: Files up to this size are hashed on the event loop after a save (about 20 µs per 8 KiB).
INLINE_HASH_BYTES = 256 * 1024
#: The sha256 of the file the request being handled saved, for the audit trail.
written_sha256: contextvars.ContextVar[str | None] = contextvars.ContextVar("hdshub_written", default=None)
#: The type of what the request being handled read ("directory", "file", "notebook"): the
#: trail records file reads only, without a second stat.
read_type: contextvars.ContextVar[str | None] = contextvars.ContextVar("hdshub_read_type", default=None)
#: Whether the read being handled returns the file's content (set by get for its reads).
returns_content: contextvars.ContextVar[bool] = contextvars.ContextVar("hdshub_returns_content", default=True)


def refuse(refusal: messages.Refusal, status: int = 403) -> web.HTTPError:
    messages.current_refusal.set(refusal)
    return web.HTTPError(status, refusal.text)


class GuardedContentsManager(AsyncLargeFileManager):
    """AsyncLargeFileManager with the project's egress and size rules (set by the guard)."""

    guard_policy: Policy | None = None
    _judge: PathJudge | None = None

    @property
    def judge(self) -> PathJudge:
        if self.guard_policy is None:  # the guard sets it at link time; never run unguarded
            raise web.HTTPError(503, "hdshub guard not initialised")
        if self._judge is None or self._judge.policy is not self.guard_policy:
            self._judge = PathJudge(self.root_dir, self.guard_policy)
        return self._judge

    async def get(self, path, content=True, type=None, format=None, require_hash=False):
        # Reads made to return content are held to the browser's size limit (_check_opened);
        # a read made only to hash a file (content=0&hash=1) is not.
        returning = returns_content.set(bool(content))
        try:
            model = await super().get(path, content=content, type=type, format=format,
                                      require_hash=require_hash)
        finally:
            returns_content.reset(returning)
        read_type.set(model.get("type"))
        return model

    @contextmanager
    def open(self, os_path, *args, **kwargs):
        """Every read of a file's content opens it here (jupyter-server's _read_file, for
        files and notebooks alike), and every read rule is judged here, on the opened file
        by its descriptor: a link, or a link a kernel swaps while the server reads, cannot
        hand out raw data or an exact copy of it, and no path is resolved twice. (A folder's
        content is a listing of names, of raw data too: folders are never opened.)"""
        mode = args[0] if args else kwargs.get("mode", "r")
        with super().open(os_path, *args, **kwargs) as f:
            if "r" in mode:
                self._check_opened(f.fileno())
            yield f

    def _check_opened(self, fd: int) -> None:
        """Raw data first (a large raw file is refused as raw data: the user learns the rule,
        not a size), then the size a browser may open, then exact copies of a dataset."""
        judge = self.judge
        if judge.is_raw_real(judge.opened_path(fd)):
            raise refuse(messages.refusal("raw-data"))
        size = os.fstat(fd).st_size
        limit = self.guard_policy.read_max_bytes
        if size > limit and returns_content.get():
            raise refuse(messages.refusal("read-too-large", size=messages.human_size(size),
                                          limit=messages.human_size(limit)))
        copied = judge.copied_dataset_of(fd, size)
        if copied:
            raise refuse(messages.refusal("raw-data-copy", name=copied))

    async def save(self, model, path=""):
        judge = self.judge
        os_path, raw = judge.resolve(path)
        if raw:
            raise refuse(messages.refusal("write-raw-data"))
        if model.get("type") == "notebook":
            # Measured, counted and hashed as it is written: _save_notebook.
            return await super().save(model, path)
        new_size = self._check_file_size(model, path, judge)
        if new_size is None:
            return await super().save(model, path)
        # For a later chunk, new_size already counts what earlier chunks wrote.
        with self._counted_write(os_path, new_size):
            result = await super().save(model, path)
        if model.get("chunk") in (None, -1):  # a whole file, or an upload's last chunk
            # The trail's sha256 is of what the file holds right after this save.
            written_sha256.set(await self._hash(lambda: sha256_of(os_path), new_size))
        return result

    async def _save_notebook(self, os_path, nb, capture_validation_error=None):
        """Every notebook written through the server ends here (a save, a copy, a new one).

        The notebook is serialised once, as nbformat writes it, and those bytes are what is
        judged against notebooks.max_bytes, counted in the storage quota, hashed for the
        trail and written. The limit so counts a notebook's bytes on disk, as the read limit
        does: a notebook that could be saved can be opened again, and nothing is serialised
        twice to be measured. Refused, nothing is written."""
        text = await asyncio.get_running_loop().run_in_executor(None, functools.partial(
            nbformat.writes, nb, version=nbformat.NO_CONVERT,
            capture_validation_error=capture_validation_error))
        data = (text if text.endswith("\n") else text + "\n").encode()
        limit = self.guard_policy.notebook_max_bytes
        if len(data) > limit:
            raise refuse(messages.refusal("notebook-too-large", size=messages.human_size(len(data)),
                                          limit=messages.human_size(limit)))
        with self._counted_write(os_path, len(data)):
            with self.atomic_writing(os_path, text=False) as f:
                f.write(data)
        written_sha256.set(await self._hash(lambda: hashlib.sha256(data).hexdigest(), len(data)))

    @contextmanager
    def _counted_write(self, os_path: str, new_size: int):
        """Refuse a write that would go over the storage quota, before anything is written;
        count it once it is done."""
        try:
            old_size = self.judge.stat_real(os_path).st_size
        except OSError:
            old_size = 0
        storage = guard().storage
        quota.check_write(storage, new_size, old_size)
        yield
        storage.wrote(new_size - old_size)

    @staticmethod
    async def _hash(digest, size: int) -> str | None:
        """A large file is hashed off the event loop (it would stall every user of the
        server), a small one at once (handing it to a thread costs more than hashing it)."""
        if size <= INLINE_HASH_BYTES:
            return digest()
        return await asyncio.get_running_loop().run_in_executor(None, digest)

    def _check_file_size(self, model: dict, path: str, judge: PathJudge) -> int | None:
        """Refuse what the policy's upload rules forbid; return the size the file will have
        (None for what is not a file with content)."""
        policy = self.guard_policy
        content = model.get("content")
        if model.get("type") != "file" or content is None:
            return None
        chunk = model.get("chunk")
        is_upload = model.get("format") == "base64" or chunk is not None
        if model.get("format") == "base64":
            compact = content.rstrip()
            size = len(compact) * 3 // 4 - compact[-2:].count("=")
        else:
            size = len(content.encode())
        if chunk not in (None, 1):  # later chunks add to what earlier chunks wrote
            try:
                size += judge.stat_real(judge.os_path(path)).st_size
            except OSError:
                pass
        if is_upload:
            ext = os.path.splitext(path)[1].lower()
            # Every chunk, not only the first: a client may send chunk 2 or the last first,
            # and each chunk creates or extends the file.
            if ext not in policy.upload_extensions:
                raise refuse(messages.refusal(
                    "upload-type", ext=ext or "(sans extension)",
                    allowed=" ".join(sorted(policy.upload_extensions))))
        if size > policy.upload_max_bytes:
            raise refuse(messages.refusal(
                "upload-too-large", size=messages.human_size(size),
                limit=messages.human_size(policy.upload_max_bytes)))
        return size

    async def rename(self, old_path, new_path):
        judge = self.judge
        if judge.is_raw(old_path) or judge.is_raw(new_path):
            raise refuse(messages.refusal("write-raw-data"))
        return await super().rename(old_path, new_path)

    async def copy(self, from_path, to_path=None):
        judge = self.judge
        if judge.is_raw(from_path):
            raise refuse(messages.refusal("raw-data"))
        if to_path is not None and judge.is_raw(to_path):
            raise refuse(messages.refusal("write-raw-data"))
        copied = judge.copied_dataset(judge.os_path(from_path))
        if copied:
            raise refuse(messages.refusal("raw-data-copy", name=copied))
        return await super().copy(from_path, to_path)

    async def delete(self, path):
        if self.judge.is_raw(path):
            raise refuse(messages.refusal("write-raw-data"))
        return await super().delete(path)

    async def new(self, model=None, path=""):
        if self.judge.is_raw(path):
            raise refuse(messages.refusal("write-raw-data"))
        return await super().new(model, path)
