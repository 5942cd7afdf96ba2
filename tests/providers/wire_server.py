"""A small local server speaking the OpenAI chat-completions and Anthropic messages wire formats.

Used to record the provider cassettes (nobody here reaches the real APIs) and, live, for the
timeout tests. OpenAI lives under ``/openai/v1``, Anthropic under ``/anthropic/v1``. Responses
are deterministic; markers in the last user message choose the behaviour:

=====================  ==================================================================
``!answers=a|b_c``     the i-th sample (choice index, or i-th identical request) answers
                       ``answers[i % len]`` (``_`` is a space); default ``ok``
``!fail=429x1``        the first 1 request(s) with this exact body fail with status 429;
                       ``!fail=400`` fails every time. 429 carries ``retry-after``.
``!retry-after=2``     the ``retry-after`` header value on errors (default 1)
``!quota``             OpenAI 429 with code ``insufficient_quota`` (not worth retrying)
``!sleep=1.5``         wait before answering (timeouts)
``!cached=N``          N prompt tokens reported as cached (OpenAI) / cache reads (Anthropic);
                       ``!cache-write=N`` Anthropic cache-creation tokens
``!choices=1``         OpenAI: return at most this many choices whatever ``n`` says (Ollama)
``!tool={...}``        when tools are given, call the first one with these JSON arguments
``!finish=WHY``         OpenAI: every choice ends with this finish reason (``content_filter``)
=====================  ==================================================================

A request's ``max_tokens`` (``max_completion_tokens`` for OpenAI) is honoured as the APIs do: a
longer answer is cut to that many tokens (4 characters each) and ends with ``length`` /
``max_tokens``.

``logprobs`` / ``top_logprobs`` and ``stream`` (SSE, with ``stream_options.include_usage``) are
honoured. Run it by hand with ``python -m tests.providers.wire_server [port]`` from the repository root.

Live tests can also script behaviour per model, without markers: ``server.script("cheap-1",
ModelScript(answers=["4"], fail=[500, 500], stream_usage="none"))``. A model's script wins over
the markers; ``server.bodies`` records every request body (path, JSON) for assertions.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.local_server import LocalServer

_MARK = re.compile(r"!([a-z-]+)(?:=(\{.*?\}|\S+))?")


def _markers(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) or "" for m in _MARK.finditer(text)}


def _tokens(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text) or [""]


def _count(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


@dataclass
class ModelScript:
    """What the server does for one model, call after call (the last entry of a list repeats).

    ``answers``: text answers in turn. ``tool``: arguments of a call to the request's first tool
    (or ``tool_name``) whenever tools are given. ``fail``: statuses for the first calls (``0``
    answers normally; ``[500, 500]``: two failures, then answers). ``sleep``: seconds before
    answering. ``stream_usage``: ``"auto"`` (usage when asked: ``stream_options.include_usage``
    for OpenAI, always for Anthropic), ``"none"`` (never in a stream, as some gateways), or
    ``"output"`` (only output tokens: OpenAI ``prompt_tokens`` 0, Anthropic ``message_start``
    without input tokens, as some Anthropic-compatible servers).
    """

    answers: Sequence[str] = ("ok",)
    tool: dict[str, Any] | None = None
    turns: Sequence[dict[str, Any] | None] = ()
    """Per call (after failures), tool-call arguments or None for a text answer; overrides ``tool``."""
    tool_name: str | None = None
    fail: Sequence[int] = ()
    sleep: float = 0.0
    stream_usage: str = "auto"
    refusal: str | None = None
    """OpenAI: answer with this refusal (``content`` null) instead of text."""
    reasoning_tokens: int = 0
    """OpenAI: reported as ``completion_tokens_details.reasoning_tokens``."""
    calls: int = field(default=0, init=False)

    def next_call(self) -> tuple[int, str, dict[str, Any] | None]:
        """(status to fail with or 0, answer, tool-call arguments or None) for the next call."""
        i = self.calls
        self.calls += 1
        status = self.fail[i] if i < len(self.fail) else 0
        k = i - min(i, len(self.fail))
        answer = self.answers[min(k, len(self.answers) - 1)]
        tool = self.turns[min(k, len(self.turns) - 1)] if self.turns else self.tool
        return status, answer, tool


class WireServer(LocalServer):
    def __init__(self, port: int = 0) -> None:
        super().__init__(_Handler, port)
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.requests = 0
        self.scripts: dict[str, ModelScript] = {}
        self.keep_alive = True
        """False: every reply closes its connection (no pooled sockets left when an event loop ends)."""
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    def script(self, model: str, script: ModelScript) -> ModelScript:
        """Script ``model``'s behaviour (replaces any earlier script for it)."""
        with self.lock:
            self.scripts[model] = script
        return script

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        """The request bodies sent for ``model`` so far."""
        with self.lock:
            return [b for _, b in self.bodies if b.get("model") == model]

    def take(self, model: str) -> tuple[ModelScript, int, str, dict[str, Any] | None] | None:
        """The script for ``model`` and its next (status, answer, tool arguments), if scripted."""
        with self.lock:
            script = self.scripts.get(model)
            if script is None:
                return None
            return (script, *script.next_call())

    def visit(self, body: bytes) -> tuple[int, int]:
        """(how many times this exact body was seen before, request number)."""
        with self.lock:
            key = body.decode("utf-8", "replace")
            before = self.seen[key]
            self.seen[key] += 1
            self.requests += 1
            return before, self.requests


class _Handler(BaseHTTPRequestHandler):
    server: WireServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return None

    # -- plumbing ---------------------------------------------------------------------------------

    def _close_if_asked(self) -> None:
        if not self.server.keep_alive:
            self.send_header("connection", "close")
            self.close_connection = True

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, indent=1).encode()
        self.send_response(status)
        self._close_if_asked()
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: Iterator[str], headers: dict[str, str]) -> None:
        data = "".join(events).encode()
        self.send_response(200)
        self._close_if_asked()
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        seen, number = self.server.visit(raw)
        body = json.loads(raw or b"{}")
        with self.server.lock:
            self.server.bodies.append((self.path, body))
        if self.path.startswith(("/openai/v1/chat/completions", "/compat/v1/chat/completions")):
            self._openai(body, seen, number)
        elif self.path.startswith("/anthropic/v1/messages"):
            self._anthropic(body, seen, number)
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def _fail(self, marks: dict[str, str], seen: int) -> int | None:
        spec = marks.get("fail")
        if not spec:
            return None
        status, _, times = spec.partition("x")
        if times and seen >= int(times):
            return None
        return int(status)

    # -- OpenAI -----------------------------------------------------------------------------------

    def _openai(self, body: dict[str, Any], seen: int, number: int) -> None:
        rid = f"req_oa_{number:04d}"
        if not (self.headers.get("authorization") or "").startswith("Bearer "):
            self._send(401, {"error": {"message": "missing key", "type": "invalid_request_error"}})
            return
        messages = body.get("messages") or []
        last: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        text = last.get("content") if isinstance(last.get("content"), str) else ""
        marks = _markers(text or "")
        scripted = self.server.take(str(body.get("model", "")))
        stream_usage = "auto"
        if scripted is not None:
            script, fail, answer, args = scripted
            marks = {"answer": answer}
            if args is not None:
                marks["tool"] = json.dumps(args)
            if fail:
                marks["fail"] = str(fail)
            marks["sleep"] = str(script.sleep)
            stream_usage = script.stream_usage
            seen = 0
        time.sleep(float(marks.get("sleep") or 0))
        status = 429 if "quota" in marks else self._fail(marks, seen)
        if status is not None:
            headers = {"x-request-id": rid}
            if status == 429:
                headers["retry-after"] = marks.get("retry-after") or "1"
            kind = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_error"}
            code = "insufficient_quota" if "quota" in marks else None
            error = {"message": f"simulated {status}", "type": kind.get(status, "server_error"), "code": code}
            self._send(status, {"error": error}, headers)
            return
        n = int(body.get("n") or 1)
        if "choices" in marks:
            n = min(n, int(marks["choices"]))
        answers = (marks.get("answers") or "ok").replace("_", " ").split("|")
        if "answer" in marks:  # a scripted answer, verbatim
            answers = [marks["answer"]]
        prompt_tokens = sum(_count(json.dumps(m)) for m in messages) + _count(
            json.dumps(body.get("tools", []))
        )
        cached = min(int(marks.get("cached") or 0), prompt_tokens)
        tool = marks.get("tool") if body.get("tools") else None
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        choices = []
        for i in range(n):
            answer = answers[(i + seen) % len(answers)]
            cut = isinstance(limit, int) and _count(answer) > limit
            choice = self._openai_choice(body, i, answer[: 4 * limit] if cut else answer, tool)
            if cut and tool is None:
                choice["finish_reason"] = "length"
            if marks.get("finish"):
                choice["finish_reason"] = marks["finish"]
            choices.append(choice)
        completion = sum(_count(c["message"]["content"] or "x") for c in choices)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": scripted[0].reasoning_tokens if scripted else 0,
                "audio_tokens": 0,
            },
        }
        model = body.get("model", "")
        cid = f"chatcmpl-wire{number:04d}"
        headers = {"x-request-id": rid}
        if body.get("stream"):
            include = (body.get("stream_options") or {}).get("include_usage")
            if stream_usage == "output":
                usage = {**usage, "prompt_tokens": 0, "total_tokens": completion}
            if stream_usage != "auto":
                include = stream_usage == "output"
            self._sse(self._openai_stream(cid, model, choices, usage if include else None), headers)
            return
        payload = {
            "id": cid,
            "object": "chat.completion",
            "created": 1_763_856_000,
            "model": model,
            "choices": choices,
            "usage": usage,
            "system_fingerprint": "fp_wire",
        }
        self._send(200, payload, headers)

    def _openai_choice(self, body: dict[str, Any], i: int, answer: str, tool: str | None) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": answer, "refusal": None}
        finish = "stop"
        script = self.server.scripts.get(str(body.get("model", "")))
        if script is not None and script.refusal is not None:
            return {
                "index": i,
                "message": {**message, "content": None, "refusal": script.refusal},
                "finish_reason": "stop",
                "logprobs": None,
            }
        if tool is not None:
            script = self.server.scripts.get(str(body.get("model", "")))
            name = (script.tool_name if script else None) or body["tools"][0]["function"]["name"]
            message["content"] = None
            message["tool_calls"] = [
                {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": tool}}
            ]
            finish = "tool_calls"
        choice: dict[str, Any] = {"index": i, "message": message, "finish_reason": finish, "logprobs": None}
        if body.get("logprobs") and tool is None:
            top = int(body.get("top_logprobs") or 0)
            content = []
            for j, tok in enumerate(_tokens(answer)):
                lp = round(-0.05 * (j + 1), 4)
                alts = [{"token": tok, "logprob": lp, "bytes": None}]
                alts += [
                    {"token": f"alt{k}", "logprob": round(lp - k, 4), "bytes": None} for k in range(1, top)
                ]
                content.append({"token": tok, "logprob": lp, "bytes": None, "top_logprobs": alts[:top]})
            choice["logprobs"] = {"content": content, "refusal": None}
        return choice

    def _openai_stream(
        self, cid: str, model: str, choices: list[dict[str, Any]], usage: dict[str, Any] | None
    ) -> Iterator[str]:
        def chunk(delta_choices: list[dict[str, Any]], usage_: dict[str, Any] | None = None) -> str:
            obj = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": 1_763_856_000,
                "model": model,
                "choices": delta_choices,
                "usage": usage_,
            }
            return f"data: {json.dumps(obj)}\n\n"

        for c in choices:
            i = c["index"]
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            lps = (c.get("logprobs") or {}).get("content") or []
            for j, tok in enumerate(_tokens(c["message"]["content"] or "")):
                delta: dict[str, Any] = {"index": i, "delta": {"content": tok}, "finish_reason": None}
                if j < len(lps):
                    delta["logprobs"] = {"content": [lps[j]], "refusal": None}
                yield chunk([delta])
            yield chunk([{"index": i, "delta": {}, "finish_reason": c["finish_reason"]}])
        if usage is not None:
            yield chunk([], usage)
        yield "data: [DONE]\n\n"

    # -- Anthropic --------------------------------------------------------------------------------

    def _anthropic(self, body: dict[str, Any], seen: int, number: int) -> None:
        rid = f"req_an_{number:04d}"
        if not (self.headers.get("x-api-key") or self.headers.get("authorization")):
            self._send(401, {"type": "error", "error": {"type": "authentication_error", "message": "no key"}})
            return
        messages = body.get("messages") or []
        last: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        content = last.get("content")
        if isinstance(content, list):
            text = " ".join(b.get("text", "") for b in content if isinstance(b, dict))
        else:
            text = content or ""
        marks = _markers(text)
        scripted = self.server.take(str(body.get("model", "")))
        stream_usage = "auto"
        tool_name = None
        if scripted is not None:
            script, fail, answer, args = scripted
            marks = {"answer": answer}
            if args is not None:
                marks["tool"] = json.dumps(args)
            if fail:
                marks["fail"] = str(fail)
            marks["sleep"] = str(script.sleep)
            stream_usage, tool_name = script.stream_usage, script.tool_name
            seen = 0
        time.sleep(float(marks.get("sleep") or 0))
        status = self._fail(marks, seen)
        if status is not None:
            kind = {
                400: "invalid_request_error",
                429: "rate_limit_error",
                500: "api_error",
                529: "overloaded_error",
            }.get(status, "api_error")
            headers = {"request-id": rid}
            if status in (429, 529):
                headers["retry-after"] = marks.get("retry-after") or "1"
            self._send(
                status, {"type": "error", "error": {"type": kind, "message": f"simulated {status}"}}, headers
            )
            return
        answers = (marks.get("answers") or "ok").replace("_", " ").split("|")
        if "answer" in marks:  # a scripted answer, verbatim
            answers = [marks["answer"]]
        answer = answers[seen % len(answers)]
        limit = body.get("max_tokens")
        stop = "end_turn"
        if isinstance(limit, int) and _count(answer) > limit:
            answer, stop = answer[: 4 * limit], "max_tokens"
        blocks: list[dict[str, Any]] = [{"type": "text", "text": answer}]
        if body.get("tools") and "tool" in marks:
            blocks = [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": f"toolu_{number:04d}",
                    "name": tool_name or body["tools"][0]["name"],
                    "input": json.loads(marks["tool"]),
                },
            ]
            stop = "tool_use"
        payload_in = json.dumps({k: body.get(k) for k in ("system", "messages", "tools")})
        cache_read = int(marks.get("cached") or 0)
        cache_write = int(marks.get("cache-write") or 0)
        input_tokens = max(1, _count(payload_in) - cache_read - cache_write)
        output_tokens = _count(json.dumps(blocks))
        if isinstance(limit, int):
            output_tokens = min(output_tokens, limit)
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": cache_write,
        }
        message = {
            "id": f"msg_wire{number:04d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        headers = {"request-id": rid}
        if body.get("stream"):
            self._sse(self._anthropic_stream(message, stream_usage), headers)
            return
        self._send(200, message, headers)

    def _anthropic_stream(self, message: dict[str, Any], stream_usage: str = "auto") -> Iterator[str]:
        def event(name: str, data: dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"

        usage = message["usage"]
        start_usage = {**usage, "output_tokens": 1}
        if stream_usage in ("none", "output"):
            start_usage = {"input_tokens": 0, "output_tokens": 0}
        start = {**message, "content": [], "stop_reason": None, "usage": start_usage}
        yield event("message_start", {"message": start})
        for i, block in enumerate(message["content"]):
            if block["type"] == "text":
                yield event(
                    "content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}}
                )
                for tok in _tokens(block["text"]):
                    yield event(
                        "content_block_delta", {"index": i, "delta": {"type": "text_delta", "text": tok}}
                    )
            else:
                empty = {**block, "input": {}}
                yield event("content_block_start", {"index": i, "content_block": empty})
                partial = json.dumps(block["input"])
                delta = {"type": "input_json_delta", "partial_json": partial}
                yield event("content_block_delta", {"index": i, "delta": delta})
            yield event("content_block_stop", {"index": i})
        end = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        out = 0 if stream_usage == "none" else usage["output_tokens"]
        yield event("message_delta", {"delta": end, "usage": {"output_tokens": out}})
        yield event("message_stop", {})


if __name__ == "__main__":
    server = WireServer(int(sys.argv[1]) if len(sys.argv) > 1 else 8765).start()
    print(f"wire server on {server.url} (OpenAI: {server.url}/openai/v1, Anthropic: {server.url}/anthropic)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
