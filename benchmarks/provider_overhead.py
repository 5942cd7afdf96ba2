"""Per-call overhead the OpenAI and Anthropic adapters add over the bare SDK call.

    .venv/bin/python benchmarks/provider_overhead.py [--calls 300]

Both sides replay the same recorded response from ``cassettes/`` (vcrpy, no network), so the
HTTP layer costs the same and the difference is what the adapter adds: building the request
(messages, tools, params), mapping the response to a :class:`~cascade.types.Completion`
(samples, usage, tool calls, logprobs) and the error-handling frame. Calls alternate between the
bare SDK and the adapter; the figures are medians over ``--calls`` calls after a warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import vcr

from cascade.policy.schema import GenerationParams
from cascade.providers.anthropic import AnthropicProvider
from cascade.providers.openai import OpenAIProvider
from cascade.request import Request

ROOT = Path(__file__).resolve().parent.parent
CASSETTES = ROOT / "cassettes"
ASK = "What is 2+2? Reply with the number only. !answers=4"
PARAMS = GenerationParams(max_tokens=64, temperature=0.0)

RECORDER = vcr.VCR(
    record_mode="none",
    match_on=["method", "scheme", "host", "port", "path", "query", "body"],
)


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def _atime(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


def _report(name: str, bare: list[float], adapter: list[float]) -> None:
    b, a = statistics.median(bare) * 1e6, statistics.median(adapter) * 1e6
    share = (a - b) / b
    print(f"{name:<24} bare SDK {b:7.0f} us   adapter {a:7.0f} us   overhead {a - b:+6.0f} us ({share:+.1%})")


def bench_sync(
    name: str, cassette: str, provider: Any, bare: Callable[[], Any], request: Request, calls: int
) -> None:
    with RECORDER.use_cassette(str(CASSETTES / cassette), allow_playback_repeats=True):
        for _ in range(20):  # warm-up: imports, pydantic model building, connection pools
            bare()
            provider.complete(request)
        b, a = [], []
        for _ in range(calls):
            b.append(_time(bare))
            a.append(_time(lambda: provider.complete(request)))
    _report(name, b, a)


async def bench_async(
    name: str, cassette: str, provider: Any, bare: Callable[[], Awaitable[Any]], request: Request, calls: int
) -> None:
    with RECORDER.use_cassette(str(CASSETTES / cassette), allow_playback_repeats=True):
        for _ in range(20):
            await bare()
            await provider.acomplete(request)
        b, a = [], []
        for _ in range(calls):
            b.append(await _atime(bare))
            a.append(await _atime(lambda: provider.acomplete(request)))
    _report(name, b, a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    calls = parser.parse_args().calls
    if not CASSETTES.is_dir():
        raise SystemExit(f"no cassettes at {CASSETTES}")
    import anthropic
    import openai

    request = Request.of(ASK)
    oa = OpenAIProvider("gpt-4o-mini", api_key="bench", params=PARAMS)
    oa_kw = oa.request_kwargs(request)
    oa_client = openai.OpenAI(api_key="bench", timeout=60.0, max_retries=0)
    an = AnthropicProvider("claude-haiku-4-5", api_key="bench", params=PARAMS)
    an_kw = an.request_kwargs(request)
    an_client = anthropic.Anthropic(api_key="bench", timeout=60.0, max_retries=0)

    print(f"median per call over {calls} calls, responses replayed from cassettes/ (no network)")
    bench_sync(
        "openai complete()",
        "openai/test_complete.yaml",
        oa,
        lambda: oa_client.chat.completions.create(**oa_kw),
        request,
        calls,
    )
    bench_sync(
        "anthropic complete()",
        "anthropic/test_acomplete.yaml",
        an,
        lambda: an_client.messages.create(**an_kw),
        request,
        calls,
    )

    async def run_async() -> None:
        oa_async = openai.AsyncOpenAI(api_key="bench", timeout=60.0, max_retries=0)
        an_async = anthropic.AsyncAnthropic(api_key="bench", timeout=60.0, max_retries=0)
        await bench_async(
            "openai acomplete()",
            "openai/test_complete.yaml",
            oa,
            lambda: oa_async.chat.completions.create(**oa_kw),
            request,
            calls,
        )
        await bench_async(
            "anthropic acomplete()",
            "anthropic/test_acomplete.yaml",
            an,
            lambda: an_async.messages.create(**an_kw),
            request,
            calls,
        )
        await oa_async.close()
        await an_async.close()
        await oa.aclose()
        await an.aclose()

    asyncio.run(run_async())

    # the adapter's own work, without I/O: build the request, map a response
    with RECORDER.use_cassette(str(CASSETTES / "openai/test_complete.yaml"), allow_playback_repeats=True):
        oa_response = oa_client.chat.completions.create(**oa_kw)
    with RECORDER.use_cassette(str(CASSETTES / "anthropic/test_acomplete.yaml"), allow_playback_repeats=True):
        an_response = an_client.messages.create(**an_kw)
    from cascade.providers.anthropic import parse as an_parse

    for name, fn in [
        ("openai request_kwargs()", lambda: oa.request_kwargs(request)),
        ("openai parse()", lambda: oa.parse(oa_response)),
        ("anthropic request_kwargs()", lambda: an.request_kwargs(request)),
        ("anthropic parse()", lambda: an_parse(an_response)),
    ]:
        start = time.perf_counter()
        for _ in range(10_000):
            fn()
        print(f"{name:<28} {(time.perf_counter() - start) * 100:6.2f} us per call (no I/O)")


if __name__ == "__main__":
    main()
