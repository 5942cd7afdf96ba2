"""The gateway's cost: 1,000 concurrent requests through ``cascade serve`` against in-process ``arun``.

    .venv/bin/python benchmarks/gateway.py [--concurrent 1000] [--workers 1 4] [--memory-requests 100000]

A one-tier scripted policy whose tier sleeps 20 ms is served by ``cascade serve`` (uvicorn, a
subprocess per worker count); a client in this process sends ``--concurrent`` requests at
once, plain and streaming (``stream: true``), three rounds each, and takes each request's latency.
(A minimal keep-alive HTTP/1.1 client: httpx itself needs seconds for 1,000 concurrent requests
here.) The baseline is the same policy's ``arun`` called in this process with the same concurrency. Added
latency = gateway percentile - in-process percentile (it includes the Python HTTP client's own
work). Memory: the server's resident set before and after ``--memory-requests`` requests (in
batches of ``--concurrent``), one worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cascade import Cascade

POLICY = """name: bench
tiers:
  - name: only
    provider: scripted
    model: m
    price: {input: 1, output: 1}
    options: {answers: [ok], latency: 0.02}
"""
BODY = {"model": "cascade/bench", "messages": [{"role": "user", "content": "hi"}]}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def in_process(policy: Path, n: int) -> list[float]:
    cascade = Cascade.from_policy(policy)

    async def one() -> float:
        t = time.perf_counter()
        await cascade.arun("hi")
        return time.perf_counter() - t

    await asyncio.gather(*(one() for _ in range(50)))  # warm-up
    return list(await asyncio.gather(*(one() for _ in range(n))))


class Connection:
    """A keep-alive HTTP/1.1 connection with just enough client to read one response at a time
    (httpx itself spends seconds on 1,000 concurrent requests on a small machine: not the server's)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, body: bytes) -> tuple[int, bytes]:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:] if line)
        if b"content-length" in headers:
            return status, await self.reader.readexactly(int(headers[b"content-length"]))
        data = b""
        while True:  # chunked: size line, data, CRLF; a zero size ends it
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            data += (await self.reader.readexactly(size + 2))[:size]
            if size == 0:
                return status, data

    def close(self) -> None:
        self.writer.close()


async def through(port: int, n: int, stream: bool) -> tuple[list[float], float]:
    """``n`` requests at once, one per keep-alive connection: each one's latency, and requests/s."""
    body = json.dumps({**BODY, "stream": True} if stream else BODY).encode()
    conns = list(await asyncio.gather(*(Connection.open(port) for _ in range(n))))

    async def one(conn: Connection) -> float:
        t = time.perf_counter()
        status, data = await conn.post(body)
        assert status == 200, data[:200]
        assert not stream or data.endswith(b"data: [DONE]\n\n"), data[-200:]
        return time.perf_counter() - t

    try:
        await asyncio.gather(*(one(c) for c in conns))  # warm-up: every connection used once
        start = time.perf_counter()
        times = list(await asyncio.gather(*(one(c) for c in conns)))
        return times, n / (time.perf_counter() - start)
    finally:
        for c in conns:
            c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# one worker in a process of its own, the scripted tier's call log (a test double's record of every
# request) discarded so that memory measures the gateway, not the log
RUNNER = """
import sys, uvicorn
from cascade.cli.serve import gateway
class Discard(list):
    def append(self, item): pass
gw = gateway({"policy": sys.argv[1]})
for cascade in gw.models.values():
    for tier in cascade.tiers:
        tier.provider.calls = Discard()
uvicorn.run(gw.app(), port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


def start(policy: Path, workers: int, discard_calls: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    if discard_calls:
        cmd = [sys.executable, "-c", RUNNER, str(policy), str(port)]
    else:
        cascade_cmd = str(Path(sys.executable).parent / "cascade")
        cmd = [cascade_cmd, "serve", str(policy), "--port", str(port), "--workers", str(workers)]
        cmd += ["--log-level", "warning", "--reload-interval", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                time.sleep(1.0 if workers > 1 else 0)  # let every worker come up
                return proc, port
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("cascade serve did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--memory-requests", type=int, default=100_000)
    args = parser.parse_args()
    n = args.concurrent
    print(f"cpus: {os.cpu_count()}, concurrent: {n}, tier latency 20 ms, {args.rounds} rounds (medians)")
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "bench.yaml"
        policy.write_text(POLICY)
        base = [asyncio.run(in_process(policy, n)) for _ in range(args.rounds)]
        b50 = statistics.median(pct(t, 50) for t in base)
        b99 = statistics.median(pct(t, 99) for t in base)
        print(f"in-process arun: p50 {b50 * 1000:.1f} ms, p99 {b99 * 1000:.1f} ms")
        for workers in args.workers:
            proc, port = start(policy, workers)
            try:
                for stream in (False, True):
                    runs = [asyncio.run(through(port, n, stream)) for _ in range(args.rounds)]
                    p50 = statistics.median(pct(t, 50) for t, _ in runs)
                    p99 = statistics.median(pct(t, 99) for t, _ in runs)
                    rps = statistics.median(r for _, r in runs)
                    kind = "stream" if stream else "plain "
                    print(
                        f"gateway, {workers} worker(s), {kind}: {rps:7.0f} req/s, p50 {p50 * 1000:6.1f} ms"
                        f" (+{(p50 - b50) * 1000:.1f}), p99 {p99 * 1000:6.1f} ms (+{(p99 - b99) * 1000:.1f})"
                    )
            finally:
                proc.terminate()
                proc.wait(10)
        if args.memory_requests:
            memory(policy, n, args.memory_requests)


def memory(policy: Path, n: int, total: int) -> None:
    """The server's resident set after warm-up and then every fifth of ``total`` requests."""
    proc, port = start(policy, 1, discard_calls=True)
    try:
        done, marks = 0, []
        while done < total:
            asyncio.run(through(port, n, (done // (2 * n)) % 2 == 1))  # plain and streaming in turn
            done += 2 * n  # through() warms every connection up once
            if done == 2 * n or done % (total // 5) < 2 * n:
                marks.append(f"{rss_mb(proc.pid):.1f} MB after {done}")
        print("server memory (1 worker): " + ", ".join(marks))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
