"""The audit trail's store: chain, tamper detection, refusals, export, file modes."""

import csv
import io
import json
import stat
from datetime import date

import pytest

from hdshub.audit_log import GENESIS, HUB_STREAM, AuditError, AuditTrail, line_hash
from hdshub.cli import main

PROJECT = "cohorte-x"


def event(n: int, day: str = "2026-03-10", **extra) -> dict:
    return {"time": f"{day}T09:00:{n % 60:02d}.000000Z", "user": "alice", "action": "contents-read",
            "target": f"work/table-{n}.csv", "outcome": "ok", "source_ip": "10.1.2.3", **extra}


@pytest.fixture
def trail(tmp_path):
    return AuditTrail(tmp_path / "audit")


@pytest.fixture
def five(trail):
    trail.append_many(PROJECT, [event(n) for n in range(1, 6)])
    return trail


def lines(trail) -> list[str]:
    return trail.path(PROJECT).read_text(encoding="utf-8").splitlines(keepends=True)


def rewrite(trail, new_lines) -> None:
    trail.path(PROJECT).write_text("".join(new_lines), encoding="utf-8")


def test_lines_are_chained_and_the_head_follows(five):
    records = [json.loads(line) for line in lines(five)]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert records[0]["prev"] == GENESIS
    for before, after in zip(records, records[1:]):
        assert after["prev"] == before["hash"] == line_hash(before)
    assert records[0]["project"] == PROJECT
    head = json.loads(five.head_path(PROJECT).read_text())
    assert head == {"seq": 5, "hash": records[-1]["hash"]}
    assert five.verify(PROJECT).intact and five.verify(PROJECT).count == 5
    five.append(PROJECT, event(6))
    assert five.verify(PROJECT).count == 6


def test_an_edited_field_is_found(five):
    content = lines(five)
    content[2] = content[2].replace('"alice"', '"mallory"')
    rewrite(five, content)
    verdict = five.verify(PROJECT)
    assert (verdict.line, verdict.reason) == (3, "edited")


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(five):
    content = lines(five)
    record = json.loads(content[1])
    record["target"] = "work/innocent.csv"
    record["hash"] = line_hash(record)
    content[1] = json.dumps(record) + "\n"
    rewrite(five, content)
    verdict = five.verify(PROJECT)
    assert (verdict.line, verdict.reason) == (2, "edited")


def test_a_deleted_middle_line_is_found(five):
    content = lines(five)
    del content[2]
    rewrite(five, content)
    verdict = five.verify(PROJECT)
    assert (verdict.line, verdict.reason) == (3, "deleted")
    assert "event 3 missing" in verdict.message


def test_a_swapped_pair_is_found(five):
    content = lines(five)
    content[1], content[2] = content[2], content[1]
    rewrite(five, content)
    verdict = five.verify(PROJECT)
    assert (verdict.line, verdict.reason) == (2, "reordered")


def test_a_truncated_tail_is_found_through_the_head(five):
    rewrite(five, lines(five)[:3])
    verdict = five.verify(PROJECT)
    assert (verdict.line, verdict.reason) == (4, "truncated")
    # The next write keeps the gap visible instead of hiding it.
    five.append(PROJECT, event(9))
    assert five.verify(PROJECT).reason == "deleted"


def test_a_cut_last_line_is_found(five):
    data = five.path(PROJECT).read_bytes()
    five.path(PROJECT).write_bytes(data[:-20])
    verdict = five.verify(PROJECT)
    assert verdict.reason in ("edited", "truncated") and verdict.line == 5


@pytest.mark.parametrize("head", [None, "not json", '{"seq": 5, "hash": "' + "f" * 64 + '"}'])
def test_a_bad_or_missing_head_is_found(five, head):
    if head is None:
        five.head_path(PROJECT).unlink()
    else:
        five.head_path(PROJECT).write_text(head)
    assert five.verify(PROJECT).reason == "head"


def test_a_head_one_write_behind_is_caught_up(five):
    """The hub stopped between writing lines and their head: nothing was lost."""
    head = five.head_path(PROJECT).read_text()
    five.append(PROJECT, event(6))
    five.head_path(PROJECT).write_text(head)
    five.append(PROJECT, event(7))
    assert five.verify(PROJECT).intact and five.verify(PROJECT).count == 7


@pytest.mark.parametrize("bad, message", [
    ({"action": "format-disk"}, "unknown action 'format-disk'"),
    ({"outcome": "maybe"}, "'outcome'"),
    ({"target": "a\nb"}, "line break"),
    ({"user": "x" * 200}, "128 at most"),
    ({"time": "2026-03-10 09:00:00"}, "UTC ISO-8601"),
    ({"time": "2026-02-30T09:00:00Z"}, "not a real date"),
    ({"time": "2026-03-10T09:00:00Z\n"}, "UTC ISO-8601"),
    ({"details": {"key\n": 1}}, "details key"),
    ({"source_ip": "localhost"}, "not an IP address"),
    ({"details": {"Bad Key": 1}}, "details key"),
    ({"details": {"nested": {"a": 1}}}, "string, number, boolean or null"),
    ({"details": {"n": float("nan")}}, "finite"),
    ({"details": {"code": "x" * 9000}}, "8192 at most"),
    ({"project": "other"}, "written to stream"),
    ({"extra": 1}, "unknown event fields"),
    ({"target": "\ud800"}, "UTF-8"),
])
def test_bad_events_are_refused_and_nothing_is_written(five, bad, message):
    before = five.path(PROJECT).read_bytes(), five.head_path(PROJECT).read_bytes()
    with pytest.raises(AuditError, match=message):
        five.append_many(PROJECT, [event(6), {**event(7), **bad}])
    assert (five.path(PROJECT).read_bytes(), five.head_path(PROJECT).read_bytes()) == before


@pytest.mark.parametrize("name", ["../etc", "Cohorte", "a/b", "x\n", ""])
def test_stream_names_are_project_slugs_only(trail, name):
    with pytest.raises(AuditError):
        trail.append(name, event(1))


def test_hub_events_have_no_project(trail):
    line = trail.append(HUB_STREAM, {"user": "alice", "action": "login", "target": "hub", "outcome": "ok"})
    assert line["project"] == "" and line["time"].endswith("Z")
    assert trail.path(HUB_STREAM).name == "_hub.jsonl"


def test_files_are_private(five):
    assert stat.S_IMODE(five.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(five.path(PROJECT).stat().st_mode) == 0o600
    assert stat.S_IMODE(five.head_path(PROJECT).stat().st_mode) == 0o600


def test_export_filters_by_inclusive_dates(trail):
    for n, day in enumerate(["2026-03-09", "2026-03-10", "2026-03-11", "2026-03-12"], 1):
        trail.append(PROJECT, event(n, day, details={"sha256": "ab" * 32}))
    out = io.StringIO()
    assert trail.export(PROJECT, date(2026, 3, 10), date(2026, 3, 11), "json", out) == 2
    exported = json.loads(out.getvalue())
    assert [e["time"][:10] for e in exported] == ["2026-03-10", "2026-03-11"]
    assert exported[0]["details"] == {"sha256": "ab" * 32}

    out = io.StringIO()
    assert trail.export(PROJECT, date(2026, 3, 12), date(2026, 3, 12), "csv", out) == 1
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["time", "user", "project", "action", "target", "outcome", "source_ip", "details"]
    assert rows[1][:7] == ["2026-03-12T09:00:04.000000Z", "alice", PROJECT, "contents-read",
                           "work/table-4.csv", "ok", "10.1.2.3"]
    assert json.loads(rows[1][7]) == {"sha256": "ab" * 32}


def test_csv_cells_never_start_a_formula(trail):
    trail.append(PROJECT, {**event(1), "target": "=HYPERLINK(\"http://x\")"})
    out = io.StringIO()
    trail.export(PROJECT, None, None, "csv", out)
    assert list(csv.reader(io.StringIO(out.getvalue())))[1][4].startswith("'=")


def test_cli_verify_and_export(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HDSHUB_STATE_DIR", str(tmp_path))
    trail = AuditTrail(tmp_path / "audit")
    trail.append_many(PROJECT, [event(n) for n in range(1, 4)])
    assert main(["audit", "verify", PROJECT]) == 0
    assert capsys.readouterr().out.startswith("intact: 3 events")

    output = tmp_path / "export.csv"
    assert main(["audit", "export", PROJECT, "--from", "2026-03-10", "--to", "2026-03-10",
                 "--output", str(output)]) == 0
    assert len(output.read_text().splitlines()) == 4
    assert stat.S_IMODE(output.stat().st_mode) == 0o600

    content = lines(trail)
    content[1] = content[1].replace("table-2", "table-X")
    rewrite(trail, content)
    assert main(["audit", "verify", PROJECT]) == 1
    assert "line 2: edited" in capsys.readouterr().err


@pytest.mark.parametrize("argv, code, message", [
    (["audit", "verify", "../x"], 2, "invalid project name"),
    (["audit", "verify", "nothing-here"], 1, "no audit trail"),
])
def test_cli_refusals(tmp_path, monkeypatch, capsys, argv, code, message):
    monkeypatch.setenv("HDSHUB_STATE_DIR", str(tmp_path))
    assert main(argv) == code
    assert message in capsys.readouterr().err
