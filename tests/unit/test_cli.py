"""The ``turnout`` command's front: options, their environment variables, and
errors that name what was wrong (no processes are started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from turnout.cli import main


def test_help_shows_each_options_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["api", "--help"]) == 0
    out = capsys.readouterr().out
    assert "TURNOUT_API_HOST" in out and "TURNOUT_API_PORT" in out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for var in ("TURNOUT_HOME", "TURNOUT_ROUTES_FILE", "TURNOUT_MODELS_DIR", "TURNOUT_LOG_LEVEL"):
        assert var in out


def test_a_bad_route_table_given_as_an_option_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "routes.yaml"
    bad.write_text("models:\n  iris:\n    framework: sklearn\n    version: 1\n    queue: gpux\n"
                   "    input: {kind: tabular, width: 4}\n")
    assert main(["--routes", str(bad), "routes", "check"]) == 2
    err = capsys.readouterr().err
    assert "models.iris.queue (line 5)" in err and "gpux" in err


def test_options_are_validated_with_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    # The port goes through the same pydantic settings as TURNOUT_API_PORT.
    assert main(["up", "--port", "70000"]) == 2
    assert "api_port" in capsys.readouterr().err


def test_a_gpu_worker_needs_a_device(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "gpu"]) == 2
    assert "--device" in capsys.readouterr().err


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_promote_says_what_happened() -> None:
    from turnout.cli.models import promoted_text

    assert promoted_text({"version": "1", "previous": None, "canary_ended": "2"}) == \
        "canary v2 ended, v1 serves"
    assert promoted_text({"version": "2", "previous": "1"}) == "v2 serves now (was v1)"
    assert promoted_text({"version": "1", "previous": None,
                          "canary": {"version": "2", "percent": 10.0}}) == \
        "canary v2 takes 10% of requests; v1 serves the rest"
    assert promoted_text({"version": "1", "previous": None}) == "v1 serves (nothing changed)"


def test_an_operator_command_finds_up_s_api_and_says_at_once_when_it_is_not_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from turnout.stack.redis_server import free_port

    monkeypatch.delenv("TURNOUT_URL", raising=False)
    monkeypatch.setenv("TURNOUT_HOME", str(tmp_path))
    # What `turnout up --port P` leaves behind (nothing listens there now).
    gone = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "api.url").write_text(gone + "\n")
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert f"no answer from the API at {gone}" in err
    assert "TURNOUT_URL=" in err and str(tmp_path) in err


def test_a_refused_connection_is_not_retried_when_told(tmp_path: Path) -> None:
    from turnout.client import Client, Unreachable
    from turnout.stack.redis_server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, retry_refused=False, unreachable_hint="start it") as client:
        with pytest.raises(Unreachable, match="start it"):
            client.models()
        assert client.last_waits == []  # no backoff: the answer came at once
    with Client(url, retry_for_s=0.3) as client:
        with pytest.raises(Unreachable):
            client.models()
        assert client.last_waits  # the library default still retries a restarting API
