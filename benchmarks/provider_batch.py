"""A cascade over provider batch APIs against the live cascade: same answers, what it costs.

    .venv/bin/python benchmarks/provider_batch.py [N]   (default 1000 prompts)

A replay-like job on the local fake of the OpenAI API (``tests/batch_server.py``), so it runs
offline and both drivers see the same answers: tier ``cheap`` (gpt-4o-mini, self-consistency
k=3) answers a prompt right when a seeded hash says so (about 70%), otherwise with no number;
tier ``strong`` (gpt-4o) always answers. Runs the live cascade (``Cascade.batch``, chat
completions) and ``--provider-batch`` (``run_batch``, one batch job per tier round), then the
batch job again killed once in each round and resumed from its state file. Prints answers
compared, costs at list and batch prices, jobs, and the requests sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cascade.engine.batch import run_batch
from cascade.engine.build import build
from cascade.types import CascadeResult
from tests.batch_server import BatchServer

POLICY = """\
name: bench
tiers:
  - name: cheap
    provider: openai
    model: gpt-4o-mini
    params: {{max_tokens: 64}}
    options: {{base_url: {url}}}
    scorer: {{kind: self_consistency, k: 3, answer: number}}
    threshold: 1.0
  - name: strong
    provider: openai
    model: gpt-4o
    params: {{max_tokens: 64}}
    options: {{base_url: {url}}}
"""


def answer(model: str, body: dict[str, Any]) -> str:
    prompt = body["messages"][-1]["content"]
    n = int(prompt.split()[-1])
    known = int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 10 < 7
    if model == "gpt-4o-mini" and not known:
        return "I am not sure about this one."
    return f"The answer is {n * 3}."


class Kill(KeyboardInterrupt):
    pass


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    prompts = [f"What is three times {i}" for i in range(n)]
    os.environ.setdefault("OPENAI_API_KEY", "sk-offline")
    with BatchServer(answer) as server, tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "bench.yaml"
        policy.write_text(textwrap.dedent(POLICY.format(url=json.dumps(server.base_url))))
        with build(policy) as c:
            live = c.batch(prompts, concurrency=8, return_exceptions=True)
            report = run_batch(c.settings, prompts, poll_interval=0)
            lines = len(server.lines)
            rounds = len(report.jobs)
            resent = []
            for kill_at in range(1, rounds + 1):  # killed once in each round, then resumed
                state = Path(tmp) / f"kill{kill_at}.json"
                before, submitted = len(server.lines), 0

                def kill(tier: str, rows: int, at: int = kill_at) -> None:
                    nonlocal submitted
                    submitted += 1
                    if submitted == at:
                        raise Kill

                with contextlib.suppress(Kill):
                    run_batch(c.settings, prompts, state=state, poll_interval=0, on_round=kill)
                again = run_batch(c.settings, prompts, state=state, poll_interval=0)
                same = [a.answer for a in again.results if isinstance(a, CascadeResult)] == [
                    r.answer for r in report.results if isinstance(r, CascadeResult)
                ]
                resent.append((kill_at, len(server.lines) - before - lines, same))
    live_cost = sum((r.cost for r in live if isinstance(r, CascadeResult)), 0)
    same = sum(
        isinstance(a, CascadeResult) and isinstance(b, CascadeResult) and a.answer == b.answer
        for a, b in zip(live, report.results, strict=True)
    )
    print(f"{n} prompts, 2 tiers (cheap: self-consistency k=3)")
    print(f"  live cascade:   ${live_cost:.6f}  ({server.live} chat-completion requests)")
    print(f"  provider batch: ${report.cost:.6f}  ({lines} request lines in {rounds} jobs)")
    print(f"  batch / live cost: {report.cost / live_cost:.1%}; same answers: {same}/{n}")
    print(f"  batch job's own live-price figure: ${report.live_cost:.6f}")
    for kill_at, extra, ok in resent:
        print(f"  killed in round {kill_at}, resumed: {extra} request lines sent twice; same answers: {ok}")


if __name__ == "__main__":
    main()
