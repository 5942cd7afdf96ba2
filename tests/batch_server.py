"""A local fake of the OpenAI Batch API, speaking its wire format, for the real ``openai`` SDK.

Endpoints (under ``/v1``): ``POST /files`` (multipart upload, ``purpose=batch``), ``GET
/files/{id}/content``, ``POST /batches``, ``GET /batches/{id}``, ``POST /batches/{id}/cancel``.
A batch's request lines are answered when it is created: ``answer(model, body)`` gives the text
(default ``ok``); usage is 10 prompt tokens and 1 per 4 characters out, times ``n`` choices.

Faults, per batch (``server.faults``, a list consumed in creation order; ``None``: none):
``expired`` (the first half answered, the rest error lines ``batch_expired``), ``cancelled``
(no output file), ``failed`` (status failed, no files), ``row_errors`` (every other row an error
line), ``partial`` (the last line dropped), ``mismatch`` (the first line's custom_id altered), ``unhashable`` (the first line's custom_id a list),
``empty_choices`` (the first line a 200 with usage and no choices).
``server.refusals``: per path (``/v1/files``, ``/v1/batches``, ``/v1/batches/batch_1``, a GET's too),
statuses answered first, in order (``0``: the connection dropped without an answer).
``server.batches`` and ``server.lines`` record what was created and every request line sent.
Anthropic Message Batches: ``POST/GET /v1/messages/batches``, ``GET .../{id}`` and ``.../{id}/results``.
``POST /v1/chat/completions`` answers live the same way (``server.live`` counts those requests).
"""

from __future__ import annotations

import datetime
import email.parser
import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.local_server import LocalServer

Answer = Callable[[str, dict[str, Any]], str]


class BatchServer(LocalServer):
    def __init__(self, answer: Answer | None = None, polls: int = 1) -> None:
        super().__init__(_Handler)
        self.answer: Answer = answer or (lambda model, body: "ok")
        self.polls = polls  # retrieves before a batch is over ("in_progress" until then)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.lines: list[dict[str, Any]] = []
        self.faults: list[str | None] = []
        self.live = 0  # live chat-completion requests (POST /v1/chat/completions)
        self.refusals: dict[str, list[int]] = {}  # per path: statuses answered first, in order (0: dropped)
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _file(self, data: bytes, purpose: str, name: str) -> dict[str, Any]:
        fid = f"file-{len(self.files) + 1}"
        self.files[fid] = data
        return {
            "id": fid,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": name,
            "purpose": purpose,
            "status": "processed",
        }

    def create(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            lines = [json.loads(x) for x in self.files[req["input_file_id"]].decode().splitlines() if x]
            self.lines.extend(lines)
            fault = self.faults.pop(0) if self.faults else None
            bid = f"batch_{len(self.batches) + 1}"
            out, err = [], []
            for i, line in enumerate(lines):
                cid = line["custom_id"]
                if (fault == "expired" and i >= len(lines) // 2) or (fault == "row_errors" and i % 2):
                    code = "batch_expired" if fault == "expired" else "invalid_request"
                    err.append(
                        {
                            "id": f"r{i}",
                            "custom_id": cid,
                            "response": None,
                            "error": {"code": code, "message": "not done"},
                        }
                    )
                    continue
                if fault == "mismatch" and i == 0:
                    cid += "-x"
                if fault == "unhashable" and i == 0:
                    cid = [cid]
                body = self._completion(line["body"], i)
                if fault == "empty_choices" and i == 0:
                    body["choices"] = []  # unusable, yet its usage is billed
                out.append(
                    {
                        "id": f"r{i}",
                        "custom_id": cid,
                        "error": None,
                        "response": {"status_code": 200, "request_id": f"req{i}", "body": body},
                    }
                )
            if fault == "partial" and out:
                out.pop()
            status = {"cancelled": "cancelled", "failed": "failed", "expired": "expired"}.get(
                fault or "", "completed"
            )
            ofile = efile = None
            if fault not in ("cancelled", "failed"):
                ofile = self._file(_jsonl(out), "batch_output", "out.jsonl")["id"] if out else None
                efile = self._file(_jsonl(err), "batch_output", "err.jsonl")["id"] if err else None
            batch = {
                "id": bid,
                "object": "batch",
                "endpoint": req["endpoint"],
                "input_file_id": req["input_file_id"],
                "completion_window": req["completion_window"],
                "created_at": int(time.time()),
                "status": "validating",
                "metadata": req.get("metadata"),
                "request_counts": {"total": len(lines), "completed": len(out), "failed": len(err)},
                "_final": status,
                "_out": ofile,
                "_err": efile,
                "_polls": 0,
            }
            self.batches[bid] = batch
            return _public(batch)

    def create_messages(self, req: dict[str, Any]) -> dict[str, Any]:
        """Anthropic Message Batches: ``{requests: [{custom_id, params}]}``."""
        with self.lock:
            lines = req["requests"]
            self.lines.extend({"custom_id": x["custom_id"], "body": x["params"]} for x in lines)
            fault = self.faults.pop(0) if self.faults else None
            bid = f"msgbatch_{len(self.batches) + 1}"
            out = []
            for i, line in enumerate(lines):
                cid, params = line["custom_id"], line["params"]
                if fault == "cancelled" or (fault == "expired" and i >= len(lines) // 2):
                    result: dict[str, Any] = {"type": "canceled" if fault == "cancelled" else "expired"}
                elif fault == "row_errors" and i % 2:
                    result = {
                        "type": "errored",
                        "error": {
                            "type": "error",
                            "error": {"type": "invalid_request_error", "message": "no"},
                        },
                    }
                else:
                    text = self.answer(params["model"], params)
                    result = {"type": "succeeded", "message": _message(text, params["model"], i)}
                if fault == "mismatch" and i == 0:
                    cid += "-x"
                if fault == "unhashable" and i == 0:
                    cid = [cid]
                out.append({"custom_id": cid, "result": result})
            if fault == "partial":
                out.pop()
            self.files[bid] = _jsonl(out)
            now = datetime.datetime.now(datetime.UTC).isoformat()
            batch = {
                "id": bid,
                "type": "message_batch",
                "processing_status": "in_progress",
                "request_counts": {
                    "processing": len(lines),
                    "succeeded": 0,
                    "errored": 0,
                    "canceled": 0,
                    "expired": 0,
                },
                "created_at": now,
                "expires_at": now,
                "ended_at": None,
                "archived_at": None,
                "cancel_initiated_at": None,
                "results_url": None,
                "_polls": 0,
            }
            self.batches[bid] = batch
            return _public(batch)

    def retrieve_messages(self, bid: str) -> dict[str, Any]:
        with self.lock:
            b = self.batches[bid]
            b["_polls"] += 1
            if b["_polls"] >= self.polls:
                b["processing_status"] = "ended"
                b["results_url"] = f"{self.url}/v1/messages/batches/{bid}/results"
            return _public(b)

    def retrieve(self, bid: str) -> dict[str, Any]:
        with self.lock:
            b = self.batches[bid]
            b["_polls"] += 1
            if b["_polls"] >= self.polls:
                b["status"] = b["_final"]
                b["output_file_id"], b["error_file_id"] = b["_out"], b["_err"]
            else:
                b["status"] = "in_progress"
            return _public(b)

    def _completion(self, body: dict[str, Any], i: int) -> dict[str, Any]:
        n = int(body.get("n", 1))
        text = self.answer(body["model"], body)
        out = max(1, math.ceil(len(text) / 4))
        return {
            "id": f"chatcmpl-{i}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {"index": k, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                for k in range(n)
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": out * n, "total_tokens": 10 + out * n},
        }


def _message(text: str, model: str, i: int) -> dict[str, Any]:
    out = max(1, math.ceil(len(text) / 4))
    return {
        "id": f"msg_{i}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": out},
    }


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _public(b: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in b.items() if not k.startswith("_")}


class _Handler(BaseHTTPRequestHandler):
    server: BatchServer

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: dict[str, Any], status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode())

    def _refused(self, path: str) -> bool:
        """Answer a refusal queued for ``path``, if any (before anything is stored or created)."""
        with self.server.lock:
            queued = self.server.refusals.get(path)
            status = queued.pop(0) if queued else None
        if status is None:
            return False
        if status == 0:  # a transport failure: the connection closed without an answer
            self.close_connection = True
        else:
            self._json({"error": {"message": f"refused ({status})", "type": "test"}}, status)
        return True

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("content-length", 0)))
        path = self.path.split("?")[0]
        if self._refused(path):
            return
        if path == "/v1/files":
            msg = email.parser.BytesParser().parsebytes(
                f"content-type: {self.headers['content-type']}\r\n\r\n".encode() + data
            )
            parts = {p.get_param("name", header="content-disposition"): p for p in msg.get_payload()}
            purpose = parts["purpose"].get_payload(decode=True).decode()
            upload = parts["file"]
            content = upload.get_payload(decode=True)
            return self._json(self.server._file(content, purpose, upload.get_filename() or "f"))
        if path == "/v1/chat/completions":  # the live API, for comparisons with the same answers
            with self.server.lock:
                self.server.live += 1
            return self._json(self.server._completion(json.loads(data), 0))
        if path == "/v1/messages/batches":
            return self._json(self.server.create_messages(json.loads(data)))
        if path == "/v1/batches":
            return self._json(self.server.create(json.loads(data)))
        if path.startswith("/v1/batches/") and path.endswith("/cancel"):
            b = self.server.batches[path.split("/")[3]]
            b["status"] = b["_final"] = "cancelled"
            return self._json(_public(b))
        self._json({"error": {"message": "not found"}}, 404)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if self._refused(path):
            return
        if path.startswith("/v1/files/") and path.endswith("/content"):
            return self._send(200, self.server.files[path.split("/")[3]], "application/octet-stream")
        if path.startswith("/v1/messages/batches/") and path.endswith("/results"):
            return self._send(200, self.server.files[path.split("/")[4]], "application/binary")
        if path == "/v1/messages/batches":  # newest first, as the API lists them
            data = [_public(b) for b in reversed(self.server.batches.values()) if b["id"].startswith("msg")]
            return self._json({"data": data, "has_more": False, "first_id": None, "last_id": None})
        if path.startswith("/v1/messages/batches/"):
            return self._json(self.server.retrieve_messages(path.split("/")[4]))
        if path == "/v1/batches":  # newest first, as the API lists them
            data = [_public(b) for b in reversed(self.server.batches.values())]
            return self._json({"object": "list", "data": data, "has_more": False})
        if path.startswith("/v1/batches/"):
            return self._json(self.server.retrieve(path.split("/")[3]))
        self._json({"error": {"message": "not found"}}, 404)
