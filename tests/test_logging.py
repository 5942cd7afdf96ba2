"""structlog events for every decision; never the prompt or the answer unless opted in."""

from __future__ import annotations

import logging

import pytest
from structlog.testing import capture_logs

from cascade import Cascade, PermanentProviderError
from tests.helpers import tier

SECRET_PROMPT = "my card number is 4111"


def _cascade(include_text: bool = False) -> Cascade:
    return Cascade(
        [
            tier("a", "alpha-answer", 0.1, 0.5),
            tier("b", PermanentProviderError("x"), 0.9, 0.5),
            tier("c", "gamma"),
        ],
        name="p",
        include_text=include_text,
    )


def test_every_step_is_an_event_without_text() -> None:
    with capture_logs() as logs:
        _cascade().run(SECRET_PROMPT)
    events = [e["event"] for e in logs]
    assert events == [
        "cascade.run_started",
        "cascade.attempt_scored",
        "cascade.escalated",
        "cascade.attempt_failed",
        "cascade.attempt_scored",
        "cascade.finished",
    ]
    scored = logs[1]
    assert (scored["tier"], scored["decision"], scored["score"], scored["threshold"]) == (
        "a",
        "escalated",
        0.1,
        0.5,
    )
    assert "cost" in scored and "latency_ms" in scored
    assert len({e["run_id"] for e in logs}) == 1
    blob = repr(logs)
    assert SECRET_PROMPT not in blob and "alpha-answer" not in blob and "gamma" not in blob


def test_text_is_logged_only_when_the_policy_opts_in() -> None:
    with capture_logs() as logs:
        _cascade(include_text=True).run(SECRET_PROMPT)
    assert logs[0]["prompt"] == SECRET_PROMPT and logs[-1]["answer"] == "gamma"


def test_unconfigured_structlog_goes_to_stdlib_logging(caplog: pytest.LogCaptureFixture) -> None:
    import structlog

    structlog.reset_defaults()
    with caplog.at_level(logging.INFO, logger="cascade"):
        _cascade().run("q")
    assert any("cascade.finished" in r.getMessage() for r in caplog.records)


def test_library_is_silent_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    import structlog

    structlog.reset_defaults()
    _cascade().run("q")
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_silent_by_default_when_the_app_configured_nothing() -> None:
    """No handler anywhere: Python's "last resort" would print warnings to stderr; cascade stays silent."""
    import subprocess
    import sys

    code = (
        "import cascade.logging as l; l.get_logger().warning('cascade.budget_stop', cap='day'); print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "ok"
    assert done.stderr == ""
