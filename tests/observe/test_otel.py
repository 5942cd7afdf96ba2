"""OpenTelemetry spans of runs (GenAI conventions), read back from the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from cascade import Cascade
from cascade.errors import CascadeError, PermanentProviderError
from cascade.observe import Observer, Telemetry
from cascade.testing import ScriptedProvider
from tests.serve.support import scripted, serve, two_tiers

PROMPT = "What is two plus two? (secret prompt)"
POLICY = """\
name: judged
tiers:
  - name: cheap
    provider: scripted
    model: cheap-model
    options: {answers: ["five (secret answer)"]}
    price: {input: 1, output: 1}
    scorer:
      kind: judge
      provider: scripted
      model: judge-model
      price: {input: 1, output: 1}
      options: {answers: ["Rating: [[2]]"], input_tokens: 100, output_tokens: 5}
      rubric_file: rubric.txt
    threshold: 0.5
  - name: strong
    provider: scripted
    model: strong-model
    price: {input: 1, output: 1}
    options: {answers: ["4"]}
logging: {otel: true}
"""


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def _provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _judged(tmp_path: Path, exporter: InMemorySpanExporter, include_text: bool = False) -> Cascade:
    (tmp_path / "rubric.txt").write_text("Q:\n{question}\nA:\n{answer}\nRate {lo}-{hi}.")
    (tmp_path / "p.yaml").write_text(POLICY)
    c = Cascade.from_policy(tmp_path / "p.yaml")
    assert c.observer is not None and c.observer.telemetry is not None  # the policy key turns it on
    c.observer.telemetry = Telemetry(_provider(exporter), include_text=include_text)
    return c


def _by_name(spans: Any) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def _check_judged(spans: Any) -> None:
    by = _by_name(spans)
    assert set(by) == {"invoke_workflow judged", "chat cheap-model", "chat judge-model", "chat strong-model"}
    run = by["invoke_workflow judged"]
    assert run.parent is None
    assert run.attributes is not None
    assert run.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert run.attributes["gen_ai.response.model"] == "strong-model"
    assert run.attributes["cascade.tier"] == "strong" and run.attributes["cascade.accepted"] is True
    for name in ("chat cheap-model", "chat judge-model", "chat strong-model"):
        span = by[name]
        assert span.parent is not None and span.parent.span_id == run.context.span_id  # children of the run
        assert span.context.trace_id == run.context.trace_id
        a = span.attributes
        assert (
            a is not None and a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "scripted"
        )
        assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == name.removeprefix("chat ")
        assert int(str(a["gen_ai.usage.input_tokens"])) > 0 and int(str(a["gen_ai.usage.output_tokens"])) > 0
    judge = by["chat judge-model"].attributes
    assert judge is not None and judge["cascade.scorer"] == "JudgeScorer" and judge["cascade.tier"] == "cheap"
    assert judge["gen_ai.usage.input_tokens"] == 100
    cheap, strong = by["chat cheap-model"], by["chat strong-model"]
    assert cheap.attributes is not None and float(str(cheap.attributes["cascade.cost_usd"])) > 0
    assert float(str(cheap.attributes["cascade.scorer_cost_usd"])) == pytest.approx(105e-6)
    total = float(str(run.attributes["cascade.cost_usd"]))
    assert total == pytest.approx(
        sum(float(str((s.attributes or {})["cascade.cost_usd"])) for s in (cheap, strong)) + 105e-6
    )
    (escalated,) = cheap.events
    assert escalated.name == "gen_ai.evaluation.result"
    ev = escalated.attributes
    assert ev is not None and ev["gen_ai.evaluation.name"] == "JudgeScorer"
    assert ev["gen_ai.evaluation.score.label"] == "escalated"
    assert float(str(ev["gen_ai.evaluation.score.value"])) < 0.5 and ev["cascade.threshold"] == 0.5
    (accepted,) = strong.events
    assert (
        accepted.attributes is not None and accepted.attributes["gen_ai.evaluation.score.label"] == "accepted"
    )
    for span in spans:  # no text by default
        assert not any("secret" in str(v) for v in (span.attributes or {}).values())


def test_a_run_is_a_span_with_a_child_per_tier_and_judge_call(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    c = _judged(tmp_path, exporter)
    result = c.run(PROMPT)
    assert result.tier == "strong"
    _check_judged(exporter.get_finished_spans())


def test_async_runs_are_traced_alike(tmp_path: Path, exporter: InMemorySpanExporter) -> None:
    c = _judged(tmp_path, exporter)
    asyncio.run(c.arun(PROMPT))
    _check_judged(exporter.get_finished_spans())


def test_texts_only_with_include_text(tmp_path: Path, exporter: InMemorySpanExporter) -> None:
    c = _judged(tmp_path, exporter, include_text=True)
    c.run(PROMPT)
    by = _by_name(exporter.get_finished_spans())
    run = by["invoke_workflow judged"].attributes
    assert run is not None and "secret prompt" in str(run["gen_ai.input.messages"])
    assert '"4"' in str(run["gen_ai.output.messages"])
    cheap = by["chat cheap-model"].attributes
    assert cheap is not None and "secret answer" in str(cheap["gen_ai.output.messages"])


def test_a_failed_run_is_an_error_span(exporter: InMemorySpanExporter) -> None:
    down = ScriptedProvider(PermanentProviderError("down"), model="m")
    c = Cascade([scripted("only", down)], name="broken")
    c.observer = Observer(telemetry=Telemetry(_provider(exporter)))
    with pytest.raises(CascadeError):
        c.run("q")
    by = _by_name(exporter.get_finished_spans())
    run, call = by["invoke_workflow broken"], by["chat m"]
    assert run.status.status_code == StatusCode.ERROR and call.status.status_code == StatusCode.ERROR
    assert call.attributes is not None and call.attributes["error.type"] == "PermanentProviderError"


def test_the_gateway_traces_its_requests(exporter: InMemorySpanExporter) -> None:
    cascade = two_tiers(score=0.1, observer=Observer(telemetry=Telemetry(_provider(exporter))))
    with serve({"cascade/faq": cascade}) as s:
        s.client().chat.completions.create(model="cascade/faq", messages=[{"role": "user", "content": "hi"}])
    by = _by_name(exporter.get_finished_spans())
    assert set(by) == {"invoke_workflow faq", "chat cheap-model", "chat strong-model"}
    cheap = by["chat cheap-model"]
    assert cheap.parent is not None and cheap.parent.span_id == by["invoke_workflow faq"].context.span_id
    (ev,) = cheap.events
    assert ev.attributes is not None and ev.attributes["gen_ai.evaluation.score.value"] == 0.1
    assert ev.attributes["gen_ai.evaluation.name"] == "FixedScorer"


def test_without_the_api_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from cascade.errors import ConfigurationError

    real = builtins.__import__

    def no_otel(name: str, *args: Any, **kw: Any) -> Any:
        if name.startswith("opentelemetry"):
            raise ImportError(name)
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_otel)
    with pytest.raises(ConfigurationError, match=re.escape("pip install 'cascade-llm[otel]'")):
        Telemetry()


def test_a_tier_called_again_under_a_cap_is_a_span_per_call(exporter: InMemorySpanExporter) -> None:
    from decimal import Decimal

    from cascade import Budget, Cap, RetryPolicy, Tier
    from cascade.errors import InvalidResponseError
    from cascade.types import Usage
    from tests.serve.support import PRICE

    billed = InvalidResponseError("bad", reason="truncated", provider="p")
    billed.usage = Usage(10, 5)  # a try that may have been billed ends its reservation: a new call
    retry = RetryPolicy(attempts=2, initial=0, max_wait=0, jitter=0)
    tier = Tier(
        "only", ScriptedProvider([billed, "ok"], model="m"), PRICE, None, None, retry, provider_kind="x"
    )
    c = Cascade([tier], name="capped", budget=Budget(caps=(Cap(Decimal(1), "day"),)))
    c.observer = Observer(telemetry=Telemetry(_provider(exporter)))
    assert c.run("q").answer == "ok"
    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == ["chat m", "chat m", "invoke_workflow capped"]
    failed, answered = (s for s in spans if s.name == "chat m")
    assert failed.status.status_code == StatusCode.ERROR and answered.status.status_code != StatusCode.ERROR
