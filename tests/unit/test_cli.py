"""Bad arguments get a clear refusal (exit 2) before anything is touched."""

import pytest

from hdshub.cli import main


@pytest.fixture(autouse=True)
def no_hub(tmp_path, monkeypatch):
    # An empty state directory: any attempt to reach a hub would fail differently (exit 1).
    monkeypatch.setenv("HDSHUB_STATE_DIR", str(tmp_path))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["project", "create", "../x", "--tier", "public", "--kit", "python-stats", "--title", "t"], "invalid project name"),
        (["project", "create", "ok", "--tier", "gold", "--kit", "python-stats", "--title", "t"], "unknown tier 'gold': expected one of private, public"),
        (["project", "create", "ok", "--tier", "public", "--kit", "nope", "--title", "t"], "unknown kit 'nope'"),
        (["project", "create", "ok", "--tier", "public", "--kit", "python-stats", "--title", " "], "--title must not be empty"),
        (["project", "add-member", "Bad Name", "alice", "--role", "analyst"], "invalid project name"),
        (["project", "add-member", "demo", "Alice@x", "--role", "analyst"], "username 'Alice@x' not accepted"),
        (["user", "add", "../root"], "not accepted"),
    ],
)
def test_refusals_say_why_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_role_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["project", "add-member", "demo", "alice", "--role", "owner"])
    assert exit_.value.code == 2
    assert "invalid choice: 'owner'" in capsys.readouterr().err


def test_no_running_hub_is_a_failure_that_says_what_to_do(capsys):
    assert main(["project", "list"]) == 1
    assert "hdshub up" in capsys.readouterr().err
