"""Without ``include_text`` no prompt reaches a trace, ``explain()`` or an outcome log, even when a
provider's 400 quotes it; the SDKs' own DEBUG records of the request are withheld on request."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from cascade import Cascade
from cascade.errors import AllTiersFailedError
from cascade.logging import RedactSDKDebug, redact_sdk_debug
from tests.local_server import LocalServer

SECRET = "my card number is 4111-1111-1111-1111"
# What the checks look for: "4111" alone turns up in latency floats and random ids.
CARD = "4111-1111"


class _QuotingHandler(BaseHTTPRequestHandler):
    """Answers every request 400, quoting the prompt in the message, as providers do."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        prompt = json.dumps(body["messages"])
        if self.path.startswith("/anthropic"):
            error = {"type": "invalid_request_error", "message": f"messages: bad content {prompt}"}
            payload = {"type": "error", "error": error}
        else:
            error = {
                "message": f"Invalid prompt {prompt}",
                "type": "invalid_request_error",
                "code": "bad_prompt",
            }
            payload = {"error": error}
        data = json.dumps(payload).encode()
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", "req_42")
        self.send_header("request-id", "req_42")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVACY_TEST_KEY", "k")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(_QuotingHandler) as s:
        yield s


def _policy(tmp_path: Path, server: LocalServer, kind: str, include_text: bool) -> Path:
    base = f"{server.url}/openai/v1" if kind == "openai" else f"{server.url}/anthropic"
    model = "gpt-4o-mini" if kind == "openai" else "claude-haiku-4-5"
    text = "true" if include_text else "false"
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"name: private\ntiers:\n  - name: cheap\n    provider: {kind}\n    model: {model}\n"
        f"    options: {{base_url: '{base}', api_key_env: PRIVACY_TEST_KEY}}\n    retry: {{attempts: 1}}\n"
        "    scorer: {kind: fixed, value: 0.9}\n    threshold: 0.5\n"
        "  - {name: strong, provider: scripted, model: s, options: {answers: [fine]}}\n"
        f"logging:\n  include_text: {text}\n  outcomes: {{path: logs/outcomes.jsonl, include_text: {text}}}\n"
    )
    return policy


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_400_quoting_the_prompt_is_redacted_without_include_text(
    tmp_path: Path, server: LocalServer, kind: str
) -> None:
    c = Cascade.from_policy(_policy(tmp_path, server, kind, include_text=False))
    result = c.run(SECRET)
    c.close()
    (log,) = (tmp_path / "logs").glob("outcomes-*.jsonl")
    row = log.read_text()
    for where in (result.to_json(), result.explain(), row):
        assert CARD not in where
    error = result.attempts[0].error or ""
    assert "status 400" in error and "type invalid_request_error" in error and "request req_42" in error
    assert (kind == "openai") == ("code bad_prompt" in error)
    assert "status 400" in json.loads(row)["cascade"]["tiers"]["cheap"]["error"]


def test_with_include_text_the_provider_message_is_kept(tmp_path: Path, server: LocalServer) -> None:
    c = Cascade.from_policy(_policy(tmp_path, server, "openai", include_text=True))
    result = c.run(SECRET)
    c.close()
    (log,) = (tmp_path / "logs").glob("outcomes-*.jsonl")
    assert CARD in (result.attempts[0].error or "") and CARD in log.read_text()


def test_every_tier_failing_withholds_messages_in_the_error_and_the_row(
    tmp_path: Path, server: LocalServer
) -> None:
    policy = _policy(tmp_path, server, "openai", include_text=False)
    strong = f"{{name: strong, provider: openai, model: gpt-4o, options: {{base_url: '{server.url}/openai/v1', api_key_env: PRIVACY_TEST_KEY}}}}"
    policy.write_text(
        policy.read_text().replace(
            "{name: strong, provider: scripted, model: s, options: {answers: [fine]}}", strong
        )
    )
    c = Cascade.from_policy(policy)
    with pytest.raises(AllTiersFailedError) as info:
        c.run(SECRET)
    c.close()
    (log,) = (tmp_path / "logs").glob("outcomes-*.jsonl")
    assert CARD not in str(info.value) and CARD not in log.read_text()


def test_the_sdk_debug_record_holds_the_prompt_unless_filtered(
    tmp_path: Path, server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    c = Cascade.from_policy(_policy(tmp_path, server, "anthropic", include_text=False))
    with caplog.at_level(logging.DEBUG):
        c.run(SECRET)
    assert CARD in caplog.text  # what an app with root DEBUG gets from the SDK itself
    caplog.clear()
    flt = redact_sdk_debug()
    try:
        assert isinstance(flt, RedactSDKDebug) and redact_sdk_debug() is flt
        with caplog.at_level(logging.DEBUG):
            c.run(SECRET)
        assert CARD not in caplog.text and "Request options: (withheld" in caplog.text
    finally:
        for name in ("anthropic._base_client", "openai._base_client"):
            logging.getLogger(name).removeFilter(flt)
        c.close()
