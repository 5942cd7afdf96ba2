"""The gateway against a real uvicorn server, with the ``openai`` SDK and httpx as clients."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage
from pydantic import BaseModel
from structlog.testing import capture_logs

from cascade import Budget, Cap, Cascade
from cascade.errors import PermanentProviderError
from cascade.providers.langchain import LangChainProvider
from cascade.testing import ScriptedChatModel, ScriptedProvider
from tests.serve.support import KEY, OTHER_KEY, capped, scripted, serve, two_tiers

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chat_model_cascade(chat_model: ScriptedChatModel, name: str = "agent") -> Cascade:
    return Cascade([scripted("lc", LangChainProvider(chat_model))], name=name)


# -- answers ---------------------------------------------------------------------------------------


def test_a_plain_completion_is_shaped_like_openai_with_the_cascade_facts_in_headers() -> None:
    cheap = ScriptedProvider("cheap answer", model="cheap-model")
    cascade = Cascade(
        [scripted("cheap", cheap, 0.9, 0.5), scripted("strong", ScriptedProvider("strong", model="s"))],
        name="faq",
    )
    with serve({"cascade/faq": cascade}) as s:
        raw = s.client().chat.completions.with_raw_response.create(
            model="cascade/faq", messages=[{"role": "user", "content": "hi"}]
        )
    body = raw.parse()
    assert raw.headers["x-cascade-tier"] == "cheap"
    assert raw.headers["x-cascade-cost-usd"] == "0.00002"
    assert raw.headers["x-request-id"] == body.id and body.id.startswith("chatcmpl-")
    assert body.object == "chat.completion" and body.model == "cascade/faq" and body.created > 0
    assert body.choices[0].message.content == "cheap answer" and body.choices[0].message.role == "assistant"
    assert body.choices[0].finish_reason == "stop"
    assert (body.usage.prompt_tokens, body.usage.completion_tokens, body.usage.total_tokens) == (10, 10, 20)
    assert cheap.calls[0][0].budget_key == "acme"  # the key's tenant is the budget key


def test_an_escalated_answer_reports_the_tier_and_everything_spent() -> None:
    with serve({"cascade/faq": two_tiers(score=0.1)}) as s:
        raw = s.client().chat.completions.with_raw_response.create(
            model="cascade/faq", messages=[{"role": "user", "content": "hi"}]
        )
    body = raw.parse()
    assert raw.headers["x-cascade-tier"] == "strong" and raw.headers["x-cascade-cost-usd"] == "0.00004"
    assert body.choices[0].message.content == "strong answer" and body.usage.total_tokens == 40


async def test_the_async_client_gets_the_same_answer() -> None:
    with serve({"cascade/faq": two_tiers()}) as s:
        async with openai.AsyncOpenAI(base_url=f"{s.url}/v1", api_key=KEY, max_retries=0) as aclient:
            body = await aclient.chat.completions.create(
                model="cascade/faq",
                messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            )
    assert body.choices[0].message.content == "cheap answer"


def test_a_stream_is_openai_chunks_with_usage_last_then_done() -> None:
    with serve({"cascade/faq": two_tiers(score=0.1)}) as s:
        stream = s.client().chat.completions.create(
            model="cascade/faq",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        with httpx.stream(
            "POST",
            f"{s.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={"model": "cascade/faq", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        ) as r:
            lines = [line for line in r.iter_lines() if line]
            headers = r.headers
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "strong answer"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 40
    assert all(c.usage is None for c in chunks[:-1])
    assert headers["content-type"].startswith("text/event-stream") and headers["x-cascade-tier"] == "strong"
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    assert all("usage" not in json.loads(line[6:]) for line in lines[:-1])  # no include_usage: no usage key


# -- tools and structured output --------------------------------------------------------------------


def test_tools_and_tool_choice_reach_the_tier_and_tool_calls_come_back() -> None:
    call = AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}])
    model = ScriptedChatModel(model="lc-model", script=[call, call, "It is 21 C in Paris."])
    with serve({"cascade/agent": chat_model_cascade(model)}) as s:
        c = s.client()
        forced = {"type": "function", "function": {"name": "get_weather"}}
        body = c.chat.completions.create(
            model="cascade/agent",
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=[WEATHER],
            tool_choice=forced,
        )
        chunks = list(
            c.chat.completions.create(
                model="cascade/agent",
                messages=[{"role": "user", "content": "again"}],
                tools=[WEATHER],
                stream=True,
            )
        )
        tool_call = body.choices[0].message.tool_calls[0]
        follow_up = c.chat.completions.create(
            model="cascade/agent",
            messages=[
                {"role": "user", "content": "weather in Paris?"},
                body.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": tool_call.id, "content": "21 C"},
            ],
            tools=[WEATHER],
        )
    assert body.choices[0].finish_reason == "tool_calls" and body.choices[0].message.content is None
    assert (tool_call.id, tool_call.type, tool_call.function.name) == ("call_1", "function", "get_weather")
    assert json.loads(tool_call.function.arguments) == {"city": "Paris"}
    _, kwargs = model.calls[0]
    assert kwargs["tools"][0]["function"]["name"] == "get_weather"
    assert kwargs["tool_choice"] in ("get_weather", forced)
    streamed = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert [(t.index, t.function.name) for t in streamed] == [(0, "get_weather")]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert follow_up.choices[0].message.content == "It is 21 C in Paris."
    sent, _ = model.calls[2]
    assert [m.type for m in sent] == ["human", "ai", "tool"] and sent[2].tool_call_id == "call_1"


class Weather(BaseModel):
    city: str
    celsius: int


def test_structured_output_reaches_langchain_tiers_and_parses() -> None:
    model = ScriptedChatModel(model="lc-model", script=['{"city": "Paris", "celsius": 21}'])
    with serve({"cascade/agent": chat_model_cascade(model)}) as s:
        body = s.client().chat.completions.parse(
            model="cascade/agent", messages=[{"role": "user", "content": "weather?"}], response_format=Weather
        )
    assert body.choices[0].message.parsed == Weather(city="Paris", celsius=21)
    fmt = model.calls[0][1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Weather"


# -- errors ----------------------------------------------------------------------------------------


def test_a_missing_or_wrong_key_is_401_and_a_tenant_sees_only_its_models_answers() -> None:
    with serve({"cascade/faq": two_tiers()}) as s:
        with pytest.raises(openai.AuthenticationError) as wrong:
            s.client("sk-wrong").models.list()
        r = httpx.post(f"{s.url}/v1/chat/completions", json={"model": "cascade/faq"})
        assert [m.id for m in s.client(OTHER_KEY).models.list()] == ["cascade/faq"]
    assert wrong.value.status_code == 401 and wrong.value.code == "invalid_api_key"
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_an_unknown_model_is_404() -> None:
    with serve({"cascade/faq": two_tiers()}) as s, pytest.raises(openai.NotFoundError) as err:
        s.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "model_not_found" and err.value.param == "model"


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"frobnicate": 1}, "frobnicate", "unknown_parameter"),
        ({"temperature": 0.3}, "temperature", "unsupported_parameter"),
        ({"n": 3}, "n", "unsupported_value"),
    ],
)
def test_unknown_and_unsupported_parameters_are_400_and_named(
    extra: dict[str, object], param: str, code: str
) -> None:
    with serve({"cascade/faq": two_tiers()}) as s, pytest.raises(openai.BadRequestError) as err:
        s.client().chat.completions.create(
            model="cascade/faq", messages=[{"role": "user", "content": "hi"}], extra_body=extra
        )
    assert err.value.param == param and err.value.code == code and param in err.value.message


def test_malformed_json_and_oversized_bodies_are_400() -> None:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    with serve({"cascade/faq": two_tiers()}, max_body=2000) as s:
        broken = httpx.post(f"{s.url}/v1/chat/completions", content=b'{"model": ', headers=headers)
        big = {"model": "cascade/faq", "messages": [{"role": "user", "content": "x" * 3000}]}
        large = httpx.post(
            f"{s.url}/v1/chat/completions", json=big, headers={"authorization": f"Bearer {KEY}"}
        )

        def chunked() -> object:
            yield json.dumps(big).encode()

        streamed = httpx.post(f"{s.url}/v1/chat/completions", content=chunked(), headers=headers)  # no length
        nested = httpx.post(f"{s.url}/v1/chat/completions", content=b"[" * 1900, headers=headers)
    assert (broken.status_code, broken.json()["error"]["code"]) == (400, "invalid_json")
    assert (large.status_code, large.json()["error"]["code"]) == (400, "request_too_large")
    assert (streamed.status_code, streamed.json()["error"]["code"]) == (400, "request_too_large")
    assert (nested.status_code, nested.json()["error"]["code"]) == (400, "invalid_json")  # not a 500


def test_a_cap_refusal_is_429_with_retry_after_and_caps_are_per_tenant() -> None:
    cascade = capped("0.00003")  # one $0.00002 call a day per tenant
    with serve({"cascade/capped": cascade}) as s:
        ask = {"model": "cascade/capped", "messages": [{"role": "user", "content": "hi"}]}
        first = httpx.post(
            f"{s.url}/v1/chat/completions", json=ask, headers={"authorization": f"Bearer {KEY}"}
        )
        refused = httpx.post(
            f"{s.url}/v1/chat/completions", json=ask, headers={"authorization": f"Bearer {KEY}"}
        )
        other = httpx.post(
            f"{s.url}/v1/chat/completions", json=ask, headers={"authorization": f"Bearer {OTHER_KEY}"}
        )
        with pytest.raises(openai.RateLimitError):
            s.client().chat.completions.create(**ask)  # type: ignore[call-overload]
    assert first.status_code == 200 and other.status_code == 200
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 86400


def test_every_tier_failing_is_502() -> None:
    down = ScriptedProvider(PermanentProviderError("down", provider="scripted"))
    cascade = Cascade([scripted("a", down, 0.9, 0.5), scripted("b", down)], name="down")
    with serve({"cascade/down": cascade}) as s, pytest.raises(openai.InternalServerError) as err:
        s.client().chat.completions.create(model="cascade/down", messages=[{"role": "user", "content": "hi"}])
    assert (
        err.value.status_code == 502 and err.value.code == "all_tiers_failed" and "down" in err.value.message
    )


def _held(budget: Budget, tenant: str) -> tuple[Decimal, Decimal]:
    assert budget.ledger is not None
    ((bucket, _),) = budget.buckets("slow", tenant)
    return budget.ledger.held(bucket), budget.ledger.spent(bucket)  # type: ignore[attr-defined]


def _slow(latency: float) -> tuple[Cascade, Budget, ScriptedProvider]:
    budget = Budget(caps=(Cap(Decimal(1), "day", "key"),))
    provider = ScriptedProvider("late", model="m", latency=latency)
    return Cascade([scripted("only", provider)], name="slow", budget=budget), budget, provider


def test_a_passed_deadline_is_504_and_the_hold_is_settled() -> None:
    cascade, budget, provider = _slow(5.0)
    with serve({"cascade/slow": cascade}, deadline=0.2) as s:
        start = time.monotonic()
        with pytest.raises(openai.APIStatusError) as err:
            s.client().chat.completions.create(
                model="cascade/slow", messages=[{"role": "user", "content": "hi"}]
            )
        took = time.monotonic() - start
        held, spent = _held(budget, "acme")
    assert err.value.status_code == 504 and err.value.code == "timeout" and took < 2
    assert held == 0 and spent > 0  # cut off in flight: charged, never left held
    assert provider.calls == []


def test_a_client_that_disconnects_mid_stream_cancels_the_run_and_its_hold_is_settled() -> None:
    cascade, budget, provider = _slow(3.0)
    with serve({"cascade/slow": cascade}) as s:
        body = {"model": "cascade/slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{s.url}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {KEY}"},
                timeout=0.3,
            )
        gone = time.monotonic()
        while _held(budget, "acme")[0] and time.monotonic() - gone < 2.5:
            time.sleep(0.02)
        settled_after = time.monotonic() - gone
        held, spent = _held(budget, "acme")
    assert held == 0 and spent > 0 and settled_after < 1.5  # settled well before the 3 s call would end
    assert provider.calls == []  # the call never finished


# -- models, health, metrics ------------------------------------------------------------------------


def test_models_health_readiness_and_metrics() -> None:
    with serve({"cascade/faq": two_tiers(), "cascade/capped": capped()}) as s:
        models = s.client().models.list()
        one = s.client().models.retrieve("cascade/faq")
        s.client().chat.completions.create(model="cascade/faq", messages=[{"role": "user", "content": "hi"}])
        health = httpx.get(f"{s.url}/healthz")
        ready = httpx.get(f"{s.url}/readyz")
        metrics = httpx.get(f"{s.url}/metrics")
    assert sorted(m.id for m in models) == ["cascade/capped", "cascade/faq"] and one.owned_by == "cascade"
    assert health.json() == {"status": "ok"} and ready.json()["status"] == "ready"
    assert 'cascade_requests_total{outcome="accepted",policy="faq"}' in metrics.text


# -- LangChain ----------------------------------------------------------------------------------------


def test_langchain_chat_openai_through_the_gateway() -> None:
    from langchain_openai import ChatOpenAI

    call = AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_7"}])
    tools_model = ScriptedChatModel(model="lc-model", script=[call])
    with serve({"cascade/faq": two_tiers(), "cascade/agent": chat_model_cascade(tools_model)}) as s:
        llm = ChatOpenAI(base_url=f"{s.url}/v1", api_key=KEY, model="cascade/faq", max_retries=0)  # type: ignore[arg-type]
        answer = llm.invoke("hi")
        streamed = "".join(str(c.content) for c in llm.stream("hi"))
        agent = ChatOpenAI(base_url=f"{s.url}/v1", api_key=KEY, model="cascade/agent", max_retries=0)  # type: ignore[arg-type]
        called = agent.bind_tools([WEATHER]).invoke("weather in Paris?")
    assert answer.content == "cheap answer" and streamed == "cheap answer"
    assert answer.usage_metadata is not None and answer.usage_metadata["total_tokens"] == 20
    assert called.tool_calls == [
        {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_7", "type": "tool_call"}
    ]


def test_a_tenant_spend_is_in_the_policy_ledger_for_cascade_spend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cascade.cli import main
    from cascade.serve import models

    policy = tmp_path / "tenants.yaml"
    policy.write_text(
        "name: tenants\n"
        "tiers:\n"
        "  - {name: only, provider: scripted, model: m, price: {input: 1, output: 1}, options: {answers: [ok]}}\n"
        "budget:\n"
        "  caps: [{limit: 1, window: day, scope: key}]\n"
        f"  ledger: {{kind: sqlite, path: {tmp_path / 'ledger.db'}}}\n"
    )
    with serve(models.load(policy)) as s:
        s.client().chat.completions.create(
            model="cascade/tenants", messages=[{"role": "user", "content": "hi"}]
        )

    def spent(tenant: str) -> str:
        assert main(["spend", "--policy", str(policy), "--key", tenant, "--json"]) == 0
        return str(json.loads(capsys.readouterr().out)["caps"][0]["spent"])

    assert spent("acme") == "0.00002" and Decimal(spent("globex")) == 0


def test_the_trace_extension_field_comes_when_asked_without_any_text() -> None:
    with serve({"cascade/faq": two_tiers(score=0.1)}) as s:
        raw = s.client().chat.completions.with_raw_response.create(
            model="cascade/faq",
            messages=[{"role": "user", "content": "secret prompt"}],
            extra_headers={"x-cascade-trace": "1"},
        )
        plain = httpx.post(
            f"{s.url}/v1/chat/completions",
            json={"model": "cascade/faq", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {KEY}"},
        )
    trace = json.loads(raw.text)["cascade"]
    assert [(a["tier"], a["decision"]) for a in trace["attempts"]] == [
        ("cheap", "escalated"),
        ("strong", "accepted"),
    ]
    assert trace["tier"] == "strong" and trace["cost_usd"] == "0.00004" and "secret" not in raw.text
    assert "cascade" not in plain.json()


def test_response_format_for_tiers_that_cannot_take_it_is_said_in_a_warning() -> None:
    with serve({"cascade/faq": two_tiers()}) as s, capture_logs() as logs:
        body = s.client().chat.completions.create(
            model="cascade/faq",
            messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_object"},
        )
    assert body.choices[0].message.content == "cheap answer"
    (event,) = [e for e in logs if e["event"] == "cascade.serve.response_format_ignored"]
    assert event["tiers"] == ["cheap", "strong"] and event["log_level"] == "warning"


def test_a_langchain_agent_runs_its_tool_loop_through_the_gateway() -> None:
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"21 C in {city}"

    call = AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_9"}])
    model = ScriptedChatModel(model="lc-model", script=[call, "It is 21 C in Paris."])
    with serve({"cascade/agent": chat_model_cascade(model)}) as s:
        llm = ChatOpenAI(base_url=f"{s.url}/v1", api_key=KEY, model="cascade/agent", max_retries=0)  # type: ignore[arg-type]
        agent = create_agent(llm, tools=[get_weather])
        state = agent.invoke({"messages": [{"role": "user", "content": "weather in Paris?"}]})
    assert [m.type for m in state["messages"]] == ["human", "ai", "tool", "ai"]
    assert (
        state["messages"][2].content == "21 C in Paris"
        and state["messages"][-1].content == "It is 21 C in Paris."
    )
    sent, _ = model.calls[1]  # the tool's result reached the tier on the second turn
    assert sent[-1].type == "tool" and sent[-1].tool_call_id == "call_9"


def test_one_event_per_request_with_its_real_status_and_never_the_key() -> None:
    ask = {
        "model": "cascade/capped",
        "messages": [{"role": "user", "content": "secret prompt"}],
        "stream": True,
    }
    with serve({"cascade/capped": capped("0.00003")}) as s, capture_logs() as logs:
        for _ in range(2):  # the second is refused by the cap after the stream was accepted
            httpx.post(f"{s.url}/v1/chat/completions", json=ask, headers={"authorization": f"Bearer {KEY}"})
        httpx.get(f"{s.url}/v1/models", headers={"authorization": "Bearer sk-wrong"})
    events = [e for e in logs if e["event"] == "cascade.serve.request"]
    assert [e["status"] for e in events] == [200, 429, 401]
    assert events[0]["tier"] == "only" and events[0]["cost"] == "0.00002"
    assert "sk-" not in repr(logs) and "secret" not in repr(logs)


# -- abstention --------------------------------------------------------------------------------------


def abstaining(score: float = 0.1) -> Cascade:
    """cheap (0.1 < 0.5), then strong scored ``score`` against 0.5 under ``on_unverified: abstain``."""
    return Cascade(
        [
            scripted("cheap", ScriptedProvider("cheap answer", model="cheap-model"), 0.1, 0.5),
            scripted("strong", ScriptedProvider("strong answer", model="strong-model"), score, 0.5),
        ],
        name="careful",
        on_unverified="abstain",
    )


def test_an_abstention_is_empty_content_with_the_cascade_marker_in_body_chunks_and_headers() -> None:
    with serve({"cascade/careful": abstaining(), "cascade/faq": two_tiers()}) as s:
        raw = s.client().chat.completions.with_raw_response.create(
            model="cascade/careful", messages=[{"role": "user", "content": "hi"}]
        )
        stream = s.client().chat.completions.with_raw_response.create(
            model="cascade/careful", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = list(stream.parse())
        answered = s.client().chat.completions.with_raw_response.create(
            model="cascade/faq", messages=[{"role": "user", "content": "hi"}]
        )
    body = raw.parse()
    assert body.choices[0].message.content == "" and body.choices[0].finish_reason == "stop"
    marker = (body.model_extra or {})["cascade"]
    assert marker == {"abstained": True, "abstention": "tier 'strong': score 0.100 < 0.500"}
    assert raw.headers["x-cascade-abstained"] == "true" and raw.headers["x-cascade-accepted"] == "false"
    assert raw.headers["x-cascade-cost-usd"] == "0.00004" and body.usage.total_tokens == 40
    assert stream.headers["x-cascade-abstained"] == "true"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ""
    assert (chunks[-1].model_extra or {})["cascade"]["abstained"] is True
    assert "x-cascade-abstained" not in answered.headers and "cascade" not in json.loads(answered.text)


def test_an_abstention_can_be_a_422_the_sdk_raises_and_does_not_retry() -> None:
    careful = abstaining()
    with serve({"cascade/careful": careful}, abstain_as="error") as s:
        client = openai.OpenAI(base_url=f"{s.url}/v1", api_key=KEY, max_retries=2)
        s.clients.append(client)
        with pytest.raises(openai.UnprocessableEntityError) as err:
            client.chat.completions.create(
                model="cascade/careful", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.UnprocessableEntityError) as streamed:
            client.chat.completions.create(
                model="cascade/careful", messages=[{"role": "user", "content": "hi"}], stream=True
            )
    assert err.value.code == "abstained" and "score 0.100 < 0.500" in err.value.message
    assert err.value.response.headers["x-cascade-cost-usd"] == "0.00004"
    assert err.value.response.headers["x-cascade-abstained"] == "true"
    assert err.value.response.headers["x-should-retry"] == "false"
    assert streamed.value.code == "abstained"
    strong = careful.tiers[-1].provider
    assert isinstance(strong, ScriptedProvider) and len(strong.calls) == 2  # one run per request
