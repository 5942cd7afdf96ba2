"""A local server that answers in the OpenAI and Anthropic wire formats, badly on purpose.

OpenAI lives under ``/openai/v1`` (chat completions), Anthropic under ``/anthropic/v1`` (messages).
A marker in the last user message scripts the faults: ``!faults=html,ok`` makes the first request
with this exact body get ``html``, the second ``ok``, and every later one ``ok`` (the last fault
repeats if it is not ``ok``: ``!faults=drip`` drips forever). Without a marker, every request gets
``server.default`` (``ok``). A request with ``stream: true`` gets server-sent events for the faults
that can be streamed (``SSE_FAULTS``) and the raw faulty body for the others (a gateway answering
a stream with an HTML page). Under ``/clean/...`` every request is answered well whatever it says
(a second, healthy tier on the same server). ``FAULTS`` lists every fault; :class:`FaultServer` runs in a thread on a
free port and counts the requests it answered (``server.requests``).
"""

from __future__ import annotations

import json
import math
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.local_server import LocalServer

FAULTS: dict[str, str] = {
    "ok": "a well-formed answer with honest usage",
    "malformed": "a truncated JSON body (content-type: application/json)",
    "html": "an HTML error page with status 200",
    "no_choices": "JSON without choices (OpenAI) / content (Anthropic)",
    "empty_choices": "choices: [] (OpenAI) / content: [] (Anthropic)",
    "bad_types": "choices / content of the wrong JSON type",
    "no_message": "a choice without a message / a content block without a type",
    "error200": "an error object with status 200",
    "no_usage": "a good answer without usage",
    "huge_usage": "100M prompt tokens claimed for a short prompt",
    "negative_usage": "negative completion tokens",
    "big_output": "output tokens far above max_tokens",
    "string_usage": "usage values that are strings",
    "drip": "headers at once, then the body one byte every 50 ms (never ends in time)",
    "drip_headers": "the status line and headers one byte every 50 ms",
    "sleep": "nothing for 30 s, then an answer",
    "truncated": "content-length says more than is sent, then the connection closes",
    "status500": "HTTP 500 with an error body",
    "status429": "HTTP 429 with retry-after: 0",
    "status400": "HTTP 400 (a permanent error)",
    "status429_forever": "HTTP 429 with retry-after: 1e9",
    "reset": "some tokens (stream) or half the body (plain), then the connection is reset",
    "no_end": "a stream that stops after some tokens: no finish reason, no [DONE] / message_stop",
    "usage_null": "a stream whose usage chunk is followed by a chunk with usage: null",
    "delta_no_usage": "an Anthropic stream whose message_delta has no usage",
    "bad_event": "some tokens, then an event whose data is not JSON",
    "early_event": "a content event before message_start (OpenAI: a chunk without choices' index)",
    "bad_index": "a delta for a content block / choice that does not exist",
    "overloaded": "some tokens, then an overloaded_error event",
    "bad_tool_json": "a tool call whose arguments are not JSON",
    "length": "a tool call cut by max_tokens (finish_reason length / stop_reason max_tokens)",
    "content_filter": "a tool call stopped by the content filter",
    "big_body": "a body of server.big_bytes (50 MB): the size limit refuses it while reading",
}

STREAM_ONLY = {
    "no_end",
    "usage_null",
    "delta_no_usage",
    "bad_event",
    "early_event",
    "bad_index",
    "overloaded",
    "bad_tool_json",
    "length",
    "content_filter",
}
"""Faults of a stream: a plain request meeting one gets a good answer."""

SSE_FAULTS = {"ok", "no_usage", "huge_usage", "negative_usage", "big_output", "empty_choices", "error200"}
SSE_FAULTS |= STREAM_ONLY | {"reset", "big_body"}
PIECES = ["The ", "answer ", "is ", "42", "."]  # the deltas a stream sends before its fault
TOOL_ARGS = '{"city": "Paris", "unit": "celsius"}'


_MARK = re.compile(r"!faults=([a-z0-9_,]+)")
ANSWER = "The answer is 42."


def _count(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


class FaultServer(LocalServer):
    """``with FaultServer() as s: ... s.url``; ``s.default`` is the fault for unmarked prompts."""

    def __init__(self, default: str = "ok") -> None:
        super().__init__(_Handler)
        self.default = default
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.requests = 0
        self.served: Counter[str] = Counter()
        self.big_bytes = 50 * 2**20
        self.produced_in: Counter[str] = Counter()  # prompt text -> tokens a provider would bill
        self.produced_out: Counter[str] = Counter()

    def produced(self, tag: str) -> tuple[int, int]:
        """(input, output) tokens produced for the prompts containing ``tag``: what a provider bills."""
        with self.lock:
            keys = [k for k in self.produced_in.keys() | self.produced_out.keys() if tag in k]
            return sum(self.produced_in[k] for k in keys), sum(self.produced_out[k] for k in keys)

    def bill(self, text: str, input_tokens: int, output_tokens: int, max_tokens: int) -> None:
        with self.lock:
            self.produced_in[text] += input_tokens
            self.produced_out[text] += min(output_tokens, max_tokens)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that gave up on a drip closes the socket: expected
        super().handle_error(request, client_address)

    def fault_for(self, raw: bytes, text: str) -> str:
        with self.lock:
            key = raw.decode("utf-8", "replace")
            seen = self.seen[key]
            self.seen[key] += 1
            self.requests += 1
        match = _MARK.search(text)
        if match is None:
            fault = self.default
        else:
            script = match.group(1).split(",")
            fault = script[seen] if seen < len(script) else ("ok" if script[-1] == "ok" else script[-1])
        if fault not in FAULTS:
            fault = "status400"
        with self.lock:
            self.served[fault] += 1
        return fault


class _Handler(BaseHTTPRequestHandler):
    server: FaultServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return None

    def _raw(
        self, status: int, data: bytes, ctype: str = "application/json", length: int | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data) if length is None else length))
        self.send_header("x-request-id", f"req_fault_{self.server.requests}")
        if status == 429:
            self.send_header("retry-after", "1e9" if self.path.endswith("#forever") else "0")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _json(self, status: int, payload: Any) -> None:
        self._raw(status, json.dumps(payload).encode())

    def _drip(self, data: bytes, headers_too: bool) -> None:
        head = (
            f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(data) * 400}\r\n\r\n"
        ).encode()
        sock: socket.socket = self.connection
        try:
            if not headers_too:
                sock.sendall(head)
            for byte in (head if headers_too else b"") + data * 400:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            return
        finally:
            self.close_connection = True

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        anthropic = "/anthropic/" in self.path
        messages = body.get("messages") or []
        last: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        content = last.get("content")
        if isinstance(content, list):
            text = " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
        else:
            text = str(content or "")
        fault = "ok" if self.path.startswith("/clean/") else self.server.fault_for(raw, text)
        good = _anthropic_ok(body) if anthropic else _openai_ok(body)
        streamed = bool(body.get("stream"))
        if not streamed and fault in STREAM_ONLY:
            fault = "ok"
        prompt_tokens = good["usage"]["input_tokens" if anthropic else "prompt_tokens"]
        answer_tokens = good["usage"]["output_tokens" if anthropic else "completion_tokens"]
        limit = int(body.get("max_tokens") or body.get("max_completion_tokens") or 1024) * int(
            body.get("n") or 1
        )
        produced = {  # what a provider would bill for this fault (input, output); streams count below
            "ok": (prompt_tokens, answer_tokens),
            "malformed": (prompt_tokens, 0),
            "truncated": (prompt_tokens, answer_tokens),
            "drip": (prompt_tokens, answer_tokens),
            "drip_headers": (prompt_tokens, answer_tokens),
            "sleep": (prompt_tokens, answer_tokens),
            "reset": (prompt_tokens, answer_tokens),
            "big_body": (prompt_tokens, limit),
        }.get(fault, (0, 0) if fault in ("html", "error200") or fault.startswith("status") else None)
        if streamed and fault in SSE_FAULTS:
            data, out, reset = _stream(fault, good, anthropic, body, self.server.big_bytes)
            self.server.bill(text, prompt_tokens, out, limit)
            if reset or fault == "big_body":  # no content-length: the limit holds while reading
                self._reset(data, rst=reset)
            else:
                self._raw(200, data, "text/event-stream")
            return
        self.server.bill(text, *(produced or (prompt_tokens, answer_tokens)), limit)
        if fault == "ok":
            self._json(200, good)
        elif fault == "reset":
            self._reset(json.dumps(good).encode()[:60], length=5000)
        elif fault == "big_body":
            pad = "x" * self.server.big_bytes
            self._json(200, {**good, "padding": pad})
        elif fault == "malformed":
            self._raw(200, json.dumps(good).encode()[:40])
        elif fault == "html":
            self._raw(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        elif fault == "no_choices":
            self._json(200, {k: v for k, v in good.items() if k not in ("choices", "content")})
        elif fault == "empty_choices":
            self._json(200, {**good, **({"content": []} if anthropic else {"choices": []})})
        elif fault == "bad_types":
            self._json(200, {**good, **({"content": "oops"} if anthropic else {"choices": "oops"})})
        elif fault == "no_message":
            if anthropic:
                self._json(200, {**good, "content": [{"text": ANSWER}]})
            else:
                self._json(200, {**good, "choices": [{"index": 0, "finish_reason": "stop"}]})
        elif fault == "error200":
            err = {"message": "upstream overloaded", "type": "server_error", "code": "overloaded"}
            self._json(200, {"type": "error", "error": err} if anthropic else {"error": err})
        elif fault == "no_usage":
            self._json(200, {k: v for k, v in good.items() if k != "usage"})
        elif fault in ("huge_usage", "negative_usage", "big_output", "string_usage"):
            self._json(200, {**good, "usage": _bad_usage(fault, anthropic, prompt_tokens, answer_tokens)})
        elif fault in ("drip", "drip_headers"):
            self._drip(json.dumps(good).encode(), headers_too=fault == "drip_headers")
        elif fault == "sleep":
            time.sleep(30)
            self._json(200, good)
        elif fault == "truncated":
            self._raw(200, json.dumps(good).encode()[:60], length=5000)
            self.close_connection = True
        else:
            status = int(fault.removeprefix("status").removesuffix("_forever"))
            kind = {400: "invalid_request_error", 429: "rate_limit_error"}.get(status, "api_error")
            err = {"message": f"simulated {status}", "type": kind}
            if fault.endswith("_forever"):
                self.path += "#forever"
            self._json(status, {"type": "error", "error": err} if anthropic else {"error": err})

    def _reset(self, data: bytes, length: int | None = None, rst: bool = True) -> None:
        """The status, headers and ``data``, then a connection reset (RST; a clean close without ``rst``)."""
        head = "HTTP/1.1 200 OK\r\ncontent-type: " + (
            "text/event-stream" if length is None else "application/json"
        )
        head += f"\r\ncontent-length: {length}" if length is not None else "\r\nconnection: close"
        sock: socket.socket = self.connection
        try:
            sock.sendall((head + "\r\n\r\n").encode() + data)
            time.sleep(0.05)  # the client reads what was sent before the reset
            if rst:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        except OSError:
            pass
        self.close_connection = True


def _stream(
    fault: str, good: dict[str, Any], anthropic: bool, body: dict[str, Any], big: int
) -> tuple[bytes, int, bool]:
    """The events for a streamed ``fault``: (bytes, output tokens produced, reset after them)."""
    if fault in SSE_FAULTS - STREAM_ONLY - {"reset", "big_body"}:
        out = 0 if fault == "error200" else _honest(good, anthropic)[1]  # an error event ends a stream
        return _sse(fault, good, anthropic), out, False
    limit = int(body.get("max_tokens") or body.get("max_completion_tokens") or 1024)
    tool = fault in ("bad_tool_json", "length", "content_filter")
    pieces = [TOOL_ARGS[:12], TOOL_ARGS[12:]] if tool else list(PIECES)
    if fault == "bad_tool_json":
        pieces = ['{"city": ', "Paris}}"]
    if fault == "big_body":
        pieces = ["x" * big]
    sent = pieces[:2] if fault in ("bad_event", "overloaded") else pieces
    out = limit if fault == "length" else sum(_count(p) for p in sent)  # length: max_tokens produced
    stop = {"length": "length", "content_filter": "content_filter"}.get(
        fault, "tool_calls" if tool else "stop"
    )
    if anthropic:
        return _anthropic_stream(fault, good, pieces, tool, stop, out), out, fault == "reset"
    return _openai_stream(fault, good, pieces, tool, stop, out), out, fault == "reset"


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"


def _anthropic_stream(
    fault: str, good: dict[str, Any], pieces: list[str], tool: bool, stop: str, out: int
) -> bytes:
    stop = {
        "length": "max_tokens",
        "content_filter": "refusal",
        "tool_calls": "tool_use",
        "stop": "end_turn",
    }[stop]
    usage = {"input_tokens": good["usage"]["input_tokens"], "output_tokens": 1}
    parts: list[str] = []
    start = _event("message_start", {"message": {**good, "content": [], "stop_reason": None, "usage": usage}})
    block = (
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}
        if tool
        else {"type": "text", "text": ""}
    )
    index = 5 if fault == "bad_index" else 0
    deltas = [
        _event(
            "content_block_delta",
            {
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": p}
                if tool
                else {"type": "text_delta", "text": p},
            },
        )
        for p in pieces
    ]
    if fault == "early_event":
        parts.append(deltas[0])
    parts.append(start)
    parts.append(_event("content_block_start", {"index": 0, "content_block": block}))
    parts += deltas[:2] if fault in ("bad_event", "overloaded") else deltas
    if fault == "bad_event":
        parts.append("event: content_block_delta\ndata: {not json\n\n")
    elif fault == "overloaded":
        parts.append(_event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}))
    if fault in ("reset", "no_end", "bad_event", "overloaded"):
        return "".join(parts).encode()
    parts.append(_event("content_block_stop", {"index": 0}))
    delta_usage = None if fault == "delta_no_usage" else {"output_tokens": out}
    parts.append(
        _event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": delta_usage})
    )
    parts.append(_event("message_stop", {}))
    return "".join(parts).encode()


def _openai_stream(
    fault: str, good: dict[str, Any], pieces: list[str], tool: bool, stop: str, out: int
) -> bytes:
    head = {k: good[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    index = 5 if fault == "bad_index" else 0

    def chunk(delta: dict[str, Any], finish: str | None = None, i: int = 0) -> dict[str, Any]:
        return {**head, "choices": [{"index": i, "delta": delta, "finish_reason": finish}]}

    chunks: list[Any] = []
    if fault == "early_event":
        chunks.append({**head, "choices": [{"delta": {"content": pieces[0]}}]})  # no index, no finish
    for n, p in enumerate(pieces):
        if tool:
            call: dict[str, Any] = {"index": 0, "function": {"arguments": p}}
            if n == 0:
                call |= {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": p}}
            chunks.append(chunk({"role": "assistant", "tool_calls": [call]}, i=index if n else 0))
        else:
            chunks.append(chunk({"role": "assistant", "content": p}, i=index if n else 0))
        if fault in ("bad_event", "overloaded") and n == 1:
            break
    if fault == "bad_event":
        chunks.append("{not json")
    elif fault == "overloaded":
        chunks.append({"error": {"type": "overloaded_error", "message": "Overloaded"}})
    if fault in ("reset", "no_end", "bad_event", "overloaded"):
        return "".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n" for c in chunks).encode()
    chunks.append(chunk({}, stop))
    usage = {"prompt_tokens": good["usage"]["prompt_tokens"], "completion_tokens": out}
    usage["total_tokens"] = usage["prompt_tokens"] + out
    chunks.append({**head, "choices": [], "usage": usage})
    if fault == "usage_null":
        chunks.append({**head, "choices": [], "usage": None})
    return ("".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n").encode()


def _sse(fault: str, good: dict[str, Any], anthropic: bool) -> bytes:
    """``good`` as server-sent events, with ``fault`` applied."""
    usage: dict[str, Any] | None = good["usage"]
    if fault in ("huge_usage", "negative_usage", "big_output"):
        usage = _bad_usage(fault, anthropic, *_honest(good, anthropic))
    elif fault == "no_usage":
        usage = None
    err = {"message": "upstream overloaded", "type": "overloaded_error"}
    if anthropic:
        events: list[tuple[str, dict[str, Any]]] = []
        start_usage = {"input_tokens": usage["input_tokens"], "output_tokens": 1} if usage else None
        events.append(
            ("message_start", {"message": {**good, "content": [], "stop_reason": None, "usage": start_usage}})
        )
        if fault == "error200":
            events.append(("error", {"error": err}))
        blocks = [] if fault == "empty_choices" else good["content"]
        for i, block in enumerate(blocks):
            events.append(
                ("content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}})
            )
            delta = {"type": "text_delta", "text": block["text"]}
            events.append(("content_block_delta", {"index": i, "delta": delta}))
            events.append(("content_block_stop", {"index": i}))
        end = {"stop_reason": "end_turn", "stop_sequence": None}
        events.append(
            (
                "message_delta",
                {"delta": end, "usage": {"output_tokens": usage["output_tokens"]} if usage else None},
            )
        )
        events.append(("message_stop", {}))
        text = "".join(
            f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n" for name, data in events
        )
        return text.encode()
    head = {k: good[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    chunks: list[dict[str, Any]] = []
    if fault == "error200":
        chunks.append({"error": err})
    choices = [] if fault == "empty_choices" else good["choices"]
    for c in choices:
        delta = {"role": "assistant", "content": c["message"]["content"]}
        chunks.append({**head, "choices": [{"index": c["index"], "delta": delta, "finish_reason": "stop"}]})
    if usage is not None:
        chunks.append({**head, "choices": [], "usage": usage})
    return ("".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n").encode()


def _honest(good: dict[str, Any], anthropic: bool) -> tuple[int, int]:
    u = good["usage"]
    return (
        (u["input_tokens"], u["output_tokens"]) if anthropic else (u["prompt_tokens"], u["completion_tokens"])
    )


def _bad_usage(fault: str, anthropic: bool, honest_in: int, honest_out: int) -> dict[str, Any]:
    prompt, out = {
        "huge_usage": (100_000_000, honest_out),
        "negative_usage": (honest_in, -50_000),
        "big_output": (honest_in, 1_000_000),
        "string_usage": (str(honest_in), str(honest_out)),
    }[fault]
    if anthropic:
        return {"input_tokens": prompt, "output_tokens": out}
    return {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": 0}


def _openai_ok(body: dict[str, Any]) -> dict[str, Any]:
    n = int(body.get("n") or 1)
    prompt = _count(json.dumps(body.get("messages") or []))
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": ANSWER},
            "finish_reason": "stop",
            "logprobs": None,
        }
        for i in range(n)
    ]
    out = _count(ANSWER) * n
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 1_763_856_000,
        "model": body.get("model", ""),
        "choices": choices,
        "usage": {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out},
    }


def _anthropic_ok(body: dict[str, Any]) -> dict[str, Any]:
    prompt = _count(json.dumps({k: body.get(k) for k in ("system", "messages")}))
    return {
        "id": "msg_fault",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", ""),
        "content": [{"type": "text", "text": ANSWER}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": _count(ANSWER)},
    }


if __name__ == "__main__":
    server = FaultServer(sys.argv[1] if len(sys.argv) > 1 else "ok").start()
    print(f"fault server on {server.url} (/openai/v1, /anthropic)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
