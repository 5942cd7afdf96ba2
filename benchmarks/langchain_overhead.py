"""The LangChain front's own overhead next to ``with_fallbacks``, over the same zero-latency fake tiers.

    .venv/bin/python benchmarks/langchain_overhead.py [--rounds 2000] [--repeat 3] [--handler] [--json]
                                                        [--profile]

Two scenarios, sync (``invoke``) and async (``ainvoke``):

- ``first``: the first tier answers (the cascade scores it and accepts; ``with_fallbacks`` returns it);
- ``third``: the first two tiers raise, the third answers.

The cascade is built the way users build it: ``CascadeChatModel.from_policy`` with the policy's
defaults (a 60 s tier ``timeout``, three retry attempts), the three chat models passed in.

Own overhead = time of the wrapper call minus time of the same tier calls made directly (what any
caller pays anyway), taken in the same round; the figure is the median over all rounds. The three
variants of a round (direct, cascade, fallbacks) run interleaved in one process, in rotating order,
so a noisy neighbour slows all of them alike. Each call is timed on two clocks at once: wall time
(what a caller waits, work on other threads included) and this thread's CPU time (time spent
descheduled on a shared machine is not counted). ``--handler`` puts a no-op callback handler on
every call (as tracing would: every run is reported, no call can skip its run). The table also
gives each whole request (direct tier calls, cascade, fallbacks): a cascade's tier calls nobody
listens to skip LangChain's per-call run machinery, which the direct calls pay, so its own overhead
can be below zero. ``--repeat`` runs the whole measurement that many times and prints each
figure's range; ``--json`` prints one JSON object per run instead (per clock, mode and scenario:
own cascade, own fallbacks, direct, cascade, fallbacks).
The target (issue 19) is own overhead cascade / fallbacks <= 1.5 on both clocks.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig

from cascade.langchain import CascadeChatModel
from cascade.policy.schema import Policy

PROMPT = "What is 2+2?"
CONFIG: RunnableConfig | None = None  # --handler: a no-op callback handler on every call
ACCEPT = {"kind": "fixed", "value": 1.0}
POLICY = Policy.model_validate(
    {
        "name": "bench",
        "tiers": [
            {
                "name": "t1",
                "provider": "langchain",
                "model": "t1",
                "free": True,
                "scorer": ACCEPT,
                "threshold": 0.5,
            },
            {
                "name": "t2",
                "provider": "langchain",
                "model": "t2",
                "free": True,
                "scorer": ACCEPT,
                "threshold": 0.5,
            },
            {"name": "t3", "provider": "langchain", "model": "t3", "free": True},
        ],
    }
)


class Fake(BaseChatModel):
    """A zero-latency chat model: answers at once with usage, or raises (``fail``)."""

    model: str = "fake"
    fail: bool = False

    @property
    def _llm_type(self) -> str:
        return "fake"

    def _result(self) -> ChatResult:
        if self.fail:
            raise ValueError(f"{self.model} is down")
        usage = {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12}
        message = AIMessage("4", usage_metadata=usage, response_metadata={"model_name": self.model})  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._result()

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._result()


def tiers(scenario: str) -> list[Fake]:
    down = scenario == "third"
    return [Fake(model="t1", fail=down), Fake(model="t2", fail=down), Fake(model="t3")]


def cascade_model(fakes: list[Fake]) -> CascadeChatModel:
    """``from_policy`` with the policy's defaults, the chat models passed in."""
    return CascadeChatModel.from_policy(POLICY, providers={f.model: f for f in fakes})


def direct_sync(fakes: list[Fake], scenario: str) -> None:
    if scenario == "first":
        fakes[0].invoke(PROMPT, CONFIG)
        return
    for f in fakes[:2]:
        try:  # noqa: SIM105 - the cheapest way, as with_fallbacks does it
            f.invoke(PROMPT, CONFIG)
        except ValueError:
            pass
    fakes[2].invoke(PROMPT, CONFIG)


async def direct_async(fakes: list[Fake], scenario: str) -> None:
    if scenario == "first":
        await fakes[0].ainvoke(PROMPT, CONFIG)
        return
    for f in fakes[:2]:
        try:  # noqa: SIM105 - the cheapest way, as with_fallbacks does it
            await f.ainvoke(PROMPT, CONFIG)
        except ValueError:
            pass
    await fakes[2].ainvoke(PROMPT, CONFIG)


CLOCKS = ("wall", "cpu")
Figures = dict[str, list[float]]
"""Per clock ("wall", "cpu"), medians in seconds: own overhead of the cascade and of fallbacks,
then the whole request: direct tier calls, cascade, fallbacks."""


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w, time.thread_time() - c


async def atimed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.thread_time()
    await fn()
    return time.perf_counter() - w, time.thread_time() - c


class Rounds:
    """The timings of interleaved rounds (direct, cascade, fallbacks), on both clocks."""

    def __init__(self) -> None:
        self.rows: dict[str, list[list[float]]] = {k: [[] for _ in range(5)] for k in CLOCKS}

    def add(self, t: list[tuple[float, float]]) -> None:
        for i, clock in enumerate(CLOCKS):
            d, c, f = t[0][i], t[1][i], t[2][i]
            for column, value in zip(self.rows[clock], (c - d, f - d, d, c, f), strict=True):
                column.append(value)

    def medians(self) -> Figures:
        return {k: [statistics.median(column) for column in v] for k, v in self.rows.items()}


def run_sync(scenario: str, rounds: int) -> Figures:
    fakes = tiers(scenario)
    cascade = cascade_model(fakes)
    fallbacks = fakes[0].with_fallbacks(fakes[1:])
    variants: list[Callable[[], Any]] = [
        lambda: direct_sync(fakes, scenario),
        lambda: cascade.invoke(PROMPT, CONFIG),
        lambda: fallbacks.invoke(PROMPT, CONFIG),
    ]
    for v in variants * 50:  # warm up
        v()
    out = Rounds()
    for r in range(rounds):
        t = [(0.0, 0.0)] * 3
        for k in ((r + k) % 3 for k in range(3)):
            t[k] = timed(variants[k])
        out.add(t)
    return out.medians()


async def run_async(scenario: str, rounds: int) -> Figures:
    fakes = tiers(scenario)
    cascade = cascade_model(fakes)
    fallbacks = fakes[0].with_fallbacks(fakes[1:])
    variants: list[Callable[[], Awaitable[Any]]] = [
        lambda: direct_async(fakes, scenario),
        lambda: cascade.ainvoke(PROMPT, CONFIG),
        lambda: fallbacks.ainvoke(PROMPT, CONFIG),
    ]
    for v in variants * 50:
        await v()
    out = Rounds()
    for r in range(rounds):
        t = [(0.0, 0.0)] * 3
        for k in ((r + k) % 3 for k in range(3)):
            t[k] = await atimed(variants[k])
        out.add(t)
    return out.medians()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1, help="run everything this many times (ranges)")
    parser.add_argument("--json", action="store_true", help="one JSON object per run (microseconds)")
    parser.add_argument(
        "--handler", action="store_true", help="a no-op callback handler on every call (runs reported)"
    )
    parser.add_argument("--profile", action="store_true", help="profile cascade.invoke (first tier answers)")
    args = parser.parse_args()
    if args.handler:
        global CONFIG
        CONFIG = RunnableConfig(callbacks=[BaseCallbackHandler()])
    if args.profile:
        model = cascade_model(tiers("first"))
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.rounds):
            model.invoke(PROMPT)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        return
    rows: dict[tuple[str, str, str], list[list[float]]] = {}
    labels = {"first": "first tier answers", "third": "third answers after two errors"}
    for _ in range(args.repeat):
        run: dict[str, list[float]] = {}
        for mode in ("sync", "async"):
            for scenario in labels:
                if mode == "sync":
                    figures = run_sync(scenario, args.rounds)
                else:
                    figures = asyncio.run(run_async(scenario, args.rounds))
                for clock, values in figures.items():
                    rows.setdefault((clock, mode, scenario), []).append(values)
                    run[f"{clock} {mode} {scenario}"] = [round(x * 1e6, 1) for x in values]
        if args.json:
            print(json.dumps(run))
    if args.json:
        return
    print(
        "median of interleaved rounds, microseconds (ranges over"
        f" {args.repeat} runs); own = the wrapper minus the same tier calls made directly"
    )
    print(
        f"{'clock':<5} {'mode':<6} {'scenario':<31} {'own: cascade':>13} {'fallbacks':>10} {'ratio':>11}"
        f" | {'request: direct':>15} {'cascade':>9} {'fallbacks':>10}"
    )
    for (clock, mode, scenario), runs in rows.items():
        col = [[x[i] * 1e6 for x in runs] for i in range(5)]
        ratio = [x[0] / x[1] for x in runs]
        print(
            f"{clock:<5} {mode:<6} {labels[scenario]:<31} {span(col[0], '.0f'):>13} {span(col[1], '.0f'):>10}"
            f" {span(ratio, '.2f'):>11} | {span(col[2], '.0f'):>15} {span(col[3], '.0f'):>9}"
            f" {span(col[4], '.0f'):>10}"
        )


def span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}}-{hi:{fmt}}"


if __name__ == "__main__":
    main()
