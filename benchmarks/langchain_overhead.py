"""The LangChain front's own overhead next to ``with_fallbacks``, over the same zero-latency fake tiers.

    .venv/bin/python benchmarks/langchain_overhead.py [--rounds 2000] [--repeat 3] [--clock cpu|wall]
                                                        [--profile]

Two scenarios, sync (``invoke``) and async (``ainvoke``):

- ``first``: the first tier answers (the cascade scores it and accepts; ``with_fallbacks`` returns it);
- ``third``: the first two tiers raise, the third answers.

Own overhead = time of the wrapper call minus time of the same tier calls made directly (what any
caller pays anyway), taken in the same round; the figure is the median over all rounds. The four
variants of a round (direct, cascade, fallbacks) run interleaved in one process, in rotating order,
so a noisy neighbour slows all of them alike. The clock is this thread's CPU time by default
(``--clock cpu``: time spent descheduled on a shared machine is not counted), or wall time.
``--repeat`` runs the whole measurement that many times and prints each figure's range.
The target (issue 13) is cascade / fallbacks <= 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from cascade import Cascade, Price, Tier
from cascade.langchain import CascadeChatModel
from cascade.providers.langchain import LangChainProvider
from cascade.retry import RetryPolicy
from cascade.testing import FixedScorer

PRICE = Price(Decimal("0.15"), Decimal("0.60"))
PROMPT = "What is 2+2?"


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
    once = RetryPolicy(attempts=1)
    built = [
        Tier(
            f"t{i + 1}",
            LangChainProvider(f),
            PRICE,
            FixedScorer(1.0) if i < 2 else None,
            0.5 if i < 2 else None,
            once,
            "langchain",
        )
        for i, f in enumerate(fakes)
    ]
    return CascadeChatModel(cascade=Cascade(built, name="bench"))


def direct_sync(fakes: list[Fake], scenario: str) -> None:
    if scenario == "first":
        fakes[0].invoke(PROMPT)
        return
    for f in fakes[:2]:
        try:  # noqa: SIM105 - the cheapest way, as with_fallbacks does it
            f.invoke(PROMPT)
        except ValueError:
            pass
    fakes[2].invoke(PROMPT)


async def direct_async(fakes: list[Fake], scenario: str) -> None:
    if scenario == "first":
        await fakes[0].ainvoke(PROMPT)
        return
    for f in fakes[:2]:
        try:  # noqa: SIM105 - the cheapest way, as with_fallbacks does it
            await f.ainvoke(PROMPT)
        except ValueError:
            pass
    await fakes[2].ainvoke(PROMPT)


clock = time.thread_time


def timed(fn: Callable[[], Any]) -> float:
    t = clock()
    fn()
    return clock() - t


async def atimed(fn: Callable[[], Awaitable[Any]]) -> float:
    t = clock()
    await fn()
    return clock() - t


def run_sync(scenario: str, rounds: int) -> tuple[float, float]:
    fakes = tiers(scenario)
    cascade = cascade_model(fakes)
    fallbacks = fakes[0].with_fallbacks(fakes[1:])
    variants: list[Callable[[], Any]] = [
        lambda: direct_sync(fakes, scenario),
        lambda: cascade.invoke(PROMPT),
        lambda: fallbacks.invoke(PROMPT),
    ]
    for v in variants * 50:  # warm up
        v()
    own_c, own_f = [], []
    for r in range(rounds):
        order = [(r + k) % 3 for k in range(3)]
        t = [0.0, 0.0, 0.0]
        for k in order:
            t[k] = timed(variants[k])
        own_c.append(t[1] - t[0])
        own_f.append(t[2] - t[0])
    return statistics.median(own_c), statistics.median(own_f)


async def run_async(scenario: str, rounds: int) -> tuple[float, float]:
    fakes = tiers(scenario)
    cascade = cascade_model(fakes)
    fallbacks = fakes[0].with_fallbacks(fakes[1:])
    variants: list[Callable[[], Awaitable[Any]]] = [
        lambda: direct_async(fakes, scenario),
        lambda: cascade.ainvoke(PROMPT),
        lambda: fallbacks.ainvoke(PROMPT),
    ]
    for v in variants * 50:
        await v()
    own_c, own_f = [], []
    for r in range(rounds):
        order = [(r + k) % 3 for k in range(3)]
        t = [0.0, 0.0, 0.0]
        for k in order:
            t[k] = await atimed(variants[k])
        own_c.append(t[1] - t[0])
        own_f.append(t[2] - t[0])
    return statistics.median(own_c), statistics.median(own_f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1, help="run everything this many times (ranges)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--profile", action="store_true", help="profile cascade.invoke (first tier answers)")
    args = parser.parse_args()
    if args.profile:
        model = cascade_model(tiers("first"))
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.rounds):
            model.invoke(PROMPT)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        return
    global clock
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    labels = {"first": "first tier answers", "third": "third answers after two errors"}
    for _ in range(args.repeat):
        for mode in ("sync", "async"):
            for scenario in labels:
                if mode == "sync":
                    figures = run_sync(scenario, args.rounds)
                else:
                    figures = asyncio.run(run_async(scenario, args.rounds))
                rows.setdefault((mode, scenario), []).append(figures)
    print(f"own overhead per request ({args.clock} time, median of interleaved rounds; microseconds;")
    print(f"ranges over {args.repeat} runs)")
    print(f"{'mode':<6} {'scenario':<32} {'CascadeChatModel':>17} {'with_fallbacks':>15} {'ratio':>11}")
    for (mode, scenario), runs in rows.items():
        c = [x[0] * 1e6 for x in runs]
        f = [x[1] * 1e6 for x in runs]
        r = [x[0] / x[1] for x in runs]
        print(
            f"{mode:<6} {labels[scenario]:<32} {span(c, '.0f'):>17} {span(f, '.0f'):>15} {span(r, '.2f'):>11}"
        )


def span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}}-{hi:{fmt}}"


if __name__ == "__main__":
    main()
