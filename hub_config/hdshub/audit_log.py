"""The audit trail's store: one append-only, hash-chained JSON-lines file per project.

HDS traceability asks that who did what, when and from where can be shown later, and that
a changed or removed record shows. Each line carries `seq` (1, 2, ...), `prev` (the hash of
the line before; 64 zeros for the first) and `hash` (sha256 of the line's canonical JSON
without `hash`), so an edited, deleted or moved line breaks the chain. A sidecar
`<stream>.head` keeps the last seq and hash: lines cut from the end show too.

Files live in `<state dir>/audit/` (0700, files 0600, owned by the hub's user, root on a
host); no container mounts it. The hub process is the one writer. The chain has no secret:
someone able to rewrite every line and the head can forge a consistent trail, so keep the
head hash `hdshub audit verify` prints somewhere else (a ticket, the DPO's register) to pin it.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import ipaddress
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterator, TextIO

from . import naming

#: Events without a project (logins, logouts) go to this stream.
HUB_STREAM = "_hub"
GENESIS = "0" * 64

#: Actions the hub records itself.
HUB_ACTIONS = frozenset({"login", "logout", "server-start", "server-stop", "dashboard-view",
                         "report-run"})
#: Actions the guard extension sends from inside project containers (extensions/hdshub_guard).
GUARD_ACTIONS = frozenset({
    "guard-start", "audit-overflow", "request", "server-max-age",
    "contents-read", "contents-write", "contents-create", "contents-rename", "contents-delete",
    "kernel-start", "kernel-stop", "kernel-memory", "execute", "output",
    "terminal-start", "terminal-stop",
})
ACTIONS = HUB_ACTIONS | GUARD_ACTIONS
OUTCOMES = ("ok", "refused", "failed")
EVENT_FIELDS = ("time", "user", "project", "action", "target", "outcome", "source_ip", "details")
CSV_COLUMNS = EVENT_FIELDS

MAX_USER = 128
MAX_TARGET = 1024
MAX_DETAILS = 32
MAX_DETAIL_STRING = 8192
DETAIL_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TIME_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z$")
# Line breaks and other control characters would split a line for anyone reading the file
# or a CSV export with ordinary tools; JSON escapes them inside `details` only.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Spreadsheet programs run a cell starting with these as a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class AuditError(ValueError):
    """An event the trail refuses; the message names the field and the expected form."""


@dataclass(frozen=True)
class Verdict:
    """What `verify` found: intact, or the first bad line (1-based) and why."""

    count: int
    line: int | None = None
    reason: str | None = None  # edited | deleted | reordered | truncated | head
    message: str = ""
    head_hash: str = GENESIS

    @property
    def intact(self) -> bool:
        return self.reason is None

    def __str__(self) -> str:
        if self.intact:
            return f"intact: {self.count} events (head {self.head_hash})"
        return f"line {self.line}: {self.reason}: {self.message}"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def line_hash(record: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def stream_name(project: str) -> str:
    """The stream of a project slug, or HUB_STREAM; anything else is refused (it names a file)."""
    if project == HUB_STREAM:
        return project
    try:
        return naming.validate_slug(project)
    except naming.InvalidName as error:
        raise AuditError(f"{error} (or {HUB_STREAM} for hub-wide events)") from None


# -- validation -----------------------------------------------------------------------------


def _text(event: dict, key: str, limit: int, required: bool = True) -> str:
    value = event.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise AuditError(f"event field {key!r} must be a non-empty string, got {value!r}")
    if len(value) > limit:
        raise AuditError(f"event field {key!r} is {len(value)} characters long, {limit} at most")
    if CONTROL.search(value):
        raise AuditError(f"event field {key!r} contains a line break or control character")
    return value


def _details(value: object) -> dict:
    if not isinstance(value, dict):
        raise AuditError(f"event field 'details' must be an object, got {type(value).__name__}")
    if len(value) > MAX_DETAILS:
        raise AuditError(f"event 'details' has {len(value)} entries, {MAX_DETAILS} at most")
    for key, item in value.items():
        if not isinstance(key, str) or not DETAIL_KEY.fullmatch(key):
            raise AuditError(f"details key {key!r} not accepted: use a-z, 0-9 and '_' (64 at most)")
        if isinstance(item, float) and not math.isfinite(item):
            raise AuditError(f"details[{key!r}] must be a finite number")
        if isinstance(item, str) and len(item) > MAX_DETAIL_STRING:
            raise AuditError(f"details[{key!r}] is {len(item)} characters long, "
                             f"{MAX_DETAIL_STRING} at most")
        if item is not None and not isinstance(item, (str, int, float, bool)):
            raise AuditError(f"details[{key!r}] must be a string, number, boolean or null, "
                             f"got {type(item).__name__}")
    return dict(value)


def validate(stream: str, event: dict) -> dict:
    """The event as it will be stored (without chain fields), or an AuditError."""
    if not isinstance(event, dict):
        raise AuditError(f"an event must be an object, got {type(event).__name__}")
    unknown = set(event) - set(EVENT_FIELDS)
    if unknown:
        raise AuditError(f"unknown event fields {sorted(unknown)}: expected {', '.join(EVENT_FIELDS)}")
    project = "" if stream == HUB_STREAM else stream
    if event.get("project", project) != project:
        raise AuditError(f"event of project {event.get('project')!r} written to stream {stream!r}")
    time = event.get("time") or utc_now()
    if not isinstance(time, str) or not TIME_PATTERN.fullmatch(time):
        raise AuditError(f"event field 'time' {time!r}: expected UTC ISO-8601 such as "
                         "2026-01-31T09:30:00.000000Z")
    try:
        datetime.fromisoformat(time[:19])  # the pattern holds: only a real date is left to check
    except ValueError:
        raise AuditError(f"event field 'time' {time!r} is not a real date and time") from None
    action = event.get("action")
    if action not in ACTIONS:
        raise AuditError(f"unknown action {action!r}: expected one of {', '.join(sorted(ACTIONS))}")
    if event.get("outcome") not in OUTCOMES:
        raise AuditError(f"event field 'outcome' {event.get('outcome')!r}: expected one of "
                         f"{', '.join(OUTCOMES)}")
    source_ip = _text(event, "source_ip", 64, required=False)
    if source_ip:
        try:
            ipaddress.ip_address(source_ip)
        except ValueError:
            raise AuditError(f"event field 'source_ip' {source_ip!r} is not an IP address") from None
    record = {
        "time": time,
        "user": _text(event, "user", MAX_USER, required=False),
        "project": project,
        "action": action,
        "target": _text(event, "target", MAX_TARGET),
        "outcome": event["outcome"],
        "source_ip": source_ip,
    }
    if event.get("details"):
        record["details"] = _details(event["details"])
    return record


def _chained(record: dict, seq: int, prev: str) -> tuple[dict, bytes]:
    """(the record with its chain fields, its line)."""
    record = {**record, "seq": seq, "prev": prev}
    try:
        record["hash"] = line_hash(record)
        return record, canonical(record) + b"\n"
    except (ValueError, UnicodeEncodeError) as error:  # lone surrogates, NaN hidden deeper
        raise AuditError(f"event cannot be written as UTF-8 JSON: {error}") from None


# -- the store ------------------------------------------------------------------------------


class AuditTrail:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, project: str) -> Path:
        return self.directory / f"{stream_name(project)}.jsonl"

    def head_path(self, project: str) -> Path:
        return self.directory / f"{stream_name(project)}.head"

    def append(self, project: str, event: dict) -> dict:
        return self.append_many(project, [event])[0]

    def append_many(self, project: str, events: list[dict]) -> list[dict]:
        """Chain and write events in one write; all are validated first, so a refused event
        writes nothing. Returns the lines written."""
        stream = stream_name(project)
        records = [validate(stream, event) for event in events]
        if not records:
            return []
        self._ensure_directory()
        path = self.path(stream)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            # One writer at a time, across threads and processes: the chain's order is the
            # order of the writes, and readers see a line and its head together.
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            seq, prev = self._tail(stream, fd, size)
            lines, payload = [], bytearray()
            if size and os.pread(fd, 1, size - 1) != b"\n":
                payload += b"\n"  # never continue a cut line: it stays visible, on its own
            for record in records:  # a record that cannot be written fails here, before any write
                seq += 1
                record, line = _chained(record, seq, prev)
                prev = record["hash"]
                lines.append(record)
                payload += line
            try:
                if os.write(fd, payload) != len(payload):
                    raise OSError("short write (disk full?)")
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, size)  # never leave half a line behind
                raise
            self._write_head(stream, seq, prev)
        finally:
            os.close(fd)  # releases the lock
        return lines

    def _ensure_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def _tail(self, stream: str, fd: int, size: int) -> tuple[int, str]:
        """(seq, hash) the next line continues from.

        Normally the last line, which the head matches. A head ahead of the file (lines cut
        from the end) wins, so the gap stays visible to `verify`; a file ahead of its head
        (the hub stopped between the two writes) wins over the head.
        """
        raw_head = self._raw_head(stream)
        head = (raw_head["seq"], raw_head["hash"]) if raw_head else None
        last = _parse(_last_line(fd, size))
        if last is not None and (head is None or last[0] > head[0] or last == head):
            return last
        return head or (0, GENESIS)

    def _write_head(self, stream: str, seq: int, last_hash: str) -> None:
        path = self.head_path(stream)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({"seq": seq, "hash": last_hash}).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    # -- reading ----------------------------------------------------------------------------

    def _snapshot(self, project: str) -> tuple[bytes, dict | None, bool]:
        """(file content, head, head present) as of one moment; later appends only add."""
        stream = stream_name(project)
        path = self.path(stream)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return b"", self._raw_head(stream), self.head_path(stream).exists()
        with f:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            size = os.fstat(f.fileno()).st_size
            head, present = self._raw_head(stream), self.head_path(stream).exists()
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            return f.read(size), head, present

    def _raw_head(self, stream: str) -> dict | None:
        try:
            data = json.loads(self.head_path(stream).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("seq"), int) \
                or not isinstance(data.get("hash"), str):
            return None
        return data

    def exists(self, project: str) -> bool:
        return self.path(project).exists() or self.head_path(project).exists()

    def verify(self, project: str) -> Verdict:
        data, head, head_present = self._snapshot(project)
        raw_lines = data.split(b"\n")
        cut = raw_lines.pop()  # after the last line break: empty unless the last line is cut
        records = []
        for number, raw in enumerate(raw_lines, 1):
            record = _parse_record(raw)
            if record is None:
                return Verdict(len(records), number, "edited",
                               "not a complete JSON event (changed by hand, or cut during a write)")
            records.append(record)
        seqs = [r["seq"] for r in records]
        prev_seq, prev_hash = 0, GENESIS
        for number, record in enumerate(records, 1):
            if line_hash(record) != record["hash"]:
                return Verdict(number - 1, number, "edited", "its content no longer matches its hash")
            seq, expected = record["seq"], prev_seq + 1
            if seq != expected:
                if seq < expected or expected in seqs[number:]:
                    return Verdict(number - 1, number, "reordered",
                                   f"event {seq} stands where event {expected} was expected "
                                   "(lines moved or copied)")
                missing = f"event {expected}" if seq == expected + 1 else f"events {expected} to {seq - 1}"
                return Verdict(number - 1, number, "deleted", f"{missing} missing before this line")
            if record["prev"] != prev_hash and number == 1:
                return Verdict(0, 1, "edited", "the first line does not start the chain")
            if record["prev"] != prev_hash:
                return Verdict(number - 2, number - 1, "edited",
                               f"line {number} no longer links to it: one of the two was "
                               "rewritten with a recomputed hash")
            prev_seq, prev_hash = seq, record["hash"]
        count = len(records)
        if cut:
            return Verdict(count, count + 1, "truncated",
                           "the last line is incomplete (cut during a write, or by hand)")
        head_name = self.head_path(project).name
        if head is None:
            if not head_present and count == 0:
                return Verdict(0)
            return Verdict(count, count, "head",
                           f"{head_name} is {'unreadable' if head_present else 'missing'}: "
                           "lines cut from the end could not be seen")
        if head["seq"] > count:
            return Verdict(count, count + 1, "truncated",
                           f"the file ends after event {prev_seq}, the head records {head['seq']}: "
                           "the last events were removed")
        if head["seq"] < 1 or records[head["seq"] - 1]["hash"] != head["hash"]:
            return Verdict(count, head["seq"], "head",
                           f"{head_name} does not match line {head['seq']}: the trail was "
                           "rewritten up to there, or the head was changed")
        return Verdict(count, head_hash=prev_hash)

    def events(self, project: str) -> Iterator[dict]:
        """Every readable event in file order (chain fields included)."""
        data, _head, _present = self._snapshot(project)
        for raw in data.split(b"\n"):
            record = _parse_record(raw)
            if record is not None:
                yield record

    def export(self, project: str, start: date | None, end: date | None, fmt: str,
               out: TextIO) -> int:
        """Write the events whose UTC date is within [start, end] (inclusive) to `out` as
        CSV or JSON; returns how many."""
        if fmt not in ("csv", "json"):
            raise AuditError(f"export format {fmt!r}: expected csv or json")
        first = start.isoformat() if start else ""
        last = end.isoformat() if end else "9999-12-31"
        chosen = (e for e in self.events(project)
                  if isinstance(e.get("time"), str) and first <= e["time"][:10] <= last)
        count = 0
        if fmt == "json":
            out.write("[")
            for count, event in enumerate(chosen, 1):
                out.write(("\n" if count == 1 else ",\n") + json.dumps(event, ensure_ascii=False, sort_keys=True))
            out.write("\n]\n" if count else "]\n")
            return count
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for count, event in enumerate(chosen, 1):
            writer.writerow([_cell(event, column) for column in CSV_COLUMNS])
        return count


def _cell(event: dict, column: str) -> str:
    value = event.get(column, "")
    if column == "details":
        return json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""
    value = str(value)
    return "'" + value if value.startswith(FORMULA_START) else value


def _parse_record(raw: bytes) -> dict | None:
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    seq, prev, hash_ = record.get("seq"), record.get("prev"), record.get("hash")
    if type(seq) is not int or not isinstance(prev, str) or not isinstance(hash_, str):
        return None
    try:
        canonical(record)
    except (ValueError, UnicodeEncodeError):
        return None
    return record


def _parse(raw: bytes | None) -> tuple[int, str] | None:
    record = _parse_record(raw) if raw else None
    return (record["seq"], record["hash"]) if record else None


def _last_line(fd: int, size: int) -> bytes | None:
    """The file's last complete line (read backwards from the end), None if there is none."""
    if size == 0:
        return None
    end = size
    if os.pread(fd, 1, size - 1) == b"\n":
        end -= 1
    else:
        return None  # the last line is cut: there is no last complete line to continue from
    buffer, position = b"", end
    while position > 0:
        step = min(1 << 16, position)
        position -= step
        buffer = os.pread(fd, step, position) + buffer
        newline = buffer.rfind(b"\n")
        if newline >= 0:
            return buffer[newline + 1:]
    return buffer
