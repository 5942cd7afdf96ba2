"""The OpenAI wire format, keys and error mapping, without a server."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cascade.errors import (
    AllTiersFailedError,
    BudgetExceededError,
    CascadeError,
    CascadeExhaustedError,
    ConfigurationError,
    InvalidRequestError,
    LedgerUnavailableError,
)
from cascade.serve import Keys, wire
from cascade.serve.errors import ApiError, from_cascade, retry_after
from cascade.types import Attempt, CascadeResult, Sample, ToolCall
from tests.clock import day_bucket, now

USER = [{"role": "user", "content": "hi"}]


def refused(body: dict[str, object]) -> ApiError:
    with pytest.raises(ApiError) as err:
        wire.parse(body)
    assert err.value.status == 400
    return err.value


def test_a_body_becomes_a_request_with_tools_choice_and_metadata() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    call = wire.parse(
        {
            "model": "cascade/x",
            "messages": [{"role": "developer", "content": "be brief"}, *USER],
            "tools": [tool],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "metadata": {"id": "q-1"},
            "temperature": None,  # null policy-owned parameters are ignored, as OpenAI's defaults
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        budget_key="acme",
    )
    r = call.request
    assert [m.role for m in r.messages] == ["system", "user"] and r.budget_key == "acme"
    assert r.tools == (tool,) and r.tool_choice == {"type": "function", "function": {"name": "f"}}
    assert r.metadata == {"id": "q-1"} and call.stream and call.include_usage


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": USER, "logit_bias": {"1": 2}}, "logit_bias"),
        ({"model": "m", "messages": USER, "bogus": 1}, "bogus"),
        ({"model": "m", "messages": []}, "messages"),
        ({"messages": USER}, "model"),
        ({"model": "m", "messages": USER, "stream_options": {"include_usage": True}}, "stream_options"),
        (
            {"model": "m", "messages": USER, "tool_choice": {"type": "function", "function": {"name": "g"}}},
            "tool_choice",
        ),
        ({"model": "m", "messages": USER, "tools": [{"type": "retrieval"}]}, "tools[0]"),
        ({"model": "m", "messages": USER, "response_format": {"type": "xml"}}, "response_format.type"),
        (
            {"model": "m", "messages": USER, "response_format": {"type": "json_schema"}},
            "response_format.json_schema",
        ),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            },
            "messages[0].content",
        ),
        ({"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, "messages"),
        ({"model": "m", "messages": USER, "stream": "yes"}, "stream"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi", "name": 5}]}, "messages[0].name"),
        (
            {"model": "m", "messages": [{"role": "tool", "content": "x", "tool_call_id": 1}]},
            "messages[0].tool_call_id",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "\ud800"}]}, "messages"),
    ],
)
def test_what_the_gateway_cannot_take_is_refused_and_named(body: dict[str, object], param: str) -> None:
    assert refused(body).param == param


def test_a_completion_and_its_chunks_have_openai_shapes() -> None:
    calls = (ToolCall("f", {"a": 1}),)
    result = CascadeResult(
        "",
        "t",
        "m",
        True,
        "accepted",
        (Attempt("t", "m", "p", "accepted", "ok"),),
        calls,
        sample=Sample("", calls),
    )
    body = wire.completion(result, "cascade/x", "chatcmpl-1", created=7)
    msg = body["choices"][0]["message"]
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] == "tool_calls"
    assert msg["content"] is None and msg["tool_calls"][0]["function"] == {
        "name": "f",
        "arguments": '{"a": 1}',
    }
    assert msg["tool_calls"][0]["id"].startswith("call_")  # a tier that gave no id gets one
    chunks = list(wire.chunks(result, "cascade/x", "chatcmpl-1", include_usage=True, created=7))
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 4
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 0
    assert wire.sse("[DONE]") == b"data: [DONE]\n\n"


def test_a_provider_finish_reason_is_said_in_openai_words() -> None:
    result = CascadeResult(
        "x", "t", "m", True, "accepted", (), sample=Sample("x", finish_reason="max_tokens")
    )
    assert wire.completion(result, "cascade/x", "c")["choices"][0]["finish_reason"] == "length"


def test_keys_map_to_tenants_plain_or_hashed(tmp_path: Path) -> None:
    hashed = "sha256:" + hashlib.sha256(b"sk-b").hexdigest()
    path = tmp_path / "keys.yaml"
    path.write_text(f"acme: sk-a\nglobex: [{hashed}, sk-c]\n")
    keys = Keys.load(path)
    assert keys.tenant("Bearer sk-a") == "acme" and keys.tenant("bearer sk-b") == "globex"
    assert keys.tenant("Bearer sk-c") == "globex" and len(keys) == 3
    for header in (None, "", "Bearer ", "Basic sk-a", "Bearer sk-x"):
        with pytest.raises(ApiError) as err:
            keys.tenant(header)
        assert err.value.status == 401 and "sk-" not in err.value.message


@pytest.mark.parametrize("text", ["[a, b]", "acme: [sk-a, sk-a]", "acme: ''", ": x"])
def test_a_broken_keys_file_is_one_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError):
        Keys.load(path)


def test_a_cap_refusal_waits_until_its_window_ends() -> None:
    day = BudgetExceededError("no", cap=day_bucket("p"))
    start = now().replace(hour=23, minute=59, second=0, microsecond=0)
    assert retry_after(day, start) == 60
    assert retry_after(day, start - timedelta(hours=1)) == 3660
    err = from_cascade(day)
    assert err.status == 429 and "retry-after" in err.headers
    per_request = from_cascade(BudgetExceededError("no", cap="per_request", needed=Decimal(1)))
    assert per_request.status == 429 and per_request.headers == {"x-should-retry": "false"}


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (InvalidRequestError("empty prompt"), 400, "invalid_value"),
        (LedgerUnavailableError("redis down"), 503, "ledger_unavailable"),
        (AllTiersFailedError("all failed", ()), 502, "all_tiers_failed"),
        (CascadeExhaustedError("none accepted", ()), 502, "cascade_exhausted"),
        (ConfigurationError("no key"), 500, "internal_error"),
    ],
)
def test_each_cascade_error_has_its_status(error: CascadeError, status: int, code: str) -> None:
    err = from_cascade(error)
    assert (err.status, err.code) == (status, code)
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}


SECRETS = ("sk-live-1", "sk-live-2", "12345678")


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("sk-live-1: acme\nsk-live-2: acme\n", 2, "one key, one tenant"),  # written key: tenant
        ("acme: sk-live-1\n12345678: globex\n", 2, "tenant"),  # a key (a number) as a tenant
        ("acme: sk-live-1\nglobex: 12345678\n", 2, "quote it"),
        ("acme: [sk-live-1, {sk-live-2: x}]\n", 1, "key"),
        ("acme: {sk-live-1: x}\n", 1, "key or a list"),
        ("acme:\n", 1, "key or a list"),
        ("acme: sk-live-1\nacme: sk-live-2\n", 2, "repeats"),  # YAML kept only the last one
        (f"sha256:{'a' * 64}: acme\n", 1, "tenant: key"),  # a digest where the tenant goes
        ("acme: sk-live-1\n  - sk-live-2: [\n", 2, "not YAML"),
    ],
)
def test_a_keys_file_error_names_file_and_line_never_a_key(
    tmp_path: Path, text: str, line: int, what: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as err:
        Keys.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: ") and what in message
    assert not any(s in message for s in (*SECRETS, "a" * 64)), message
    assert not any(s in caplog.text for s in SECRETS)
