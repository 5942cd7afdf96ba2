"""Issue 19: CascadeChatModel side by side with ChatOpenAI / ChatAnthropic on the local wire server.

Each test does the same thing with a real ``ChatOpenAI`` (model ``gpt``) and with a cascade over
real clients, and compares what the caller sees (or what reached the wire).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypedDict

import openai
import pytest
from langchain.agents import create_agent
from langchain.agents.structured_output import ProviderStrategy
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel

from cascade import AllTiersFailedError, Cascade, ConfigurationError
from cascade.langchain import CascadeChatModel
from cascade.testing import FixedScorer, ScriptedProvider
from tests.langchain.support import Recorder, tier
from tests.langchain.test_dropin import an, oa, replace_retry, running, server, two_tiers
from tests.providers.wire_server import ModelScript, WireServer

__all__ = ["running", "server"]  # the wire-server fixtures


class Weather(BaseModel):
    city: str
    temp: int


WEATHER = {"city": "Paris", "temp": 4}


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


def both(server: WireServer, **scripts: ModelScript) -> None:
    """Script ``gpt`` (the plain ChatOpenAI) and the cascade's tiers alike."""
    for name in ("gpt", "cheap-1", "strong-1"):
        server.script(name, scripts.get(name.replace("-1", ""), scripts.get("all", ModelScript())))


def last_body(server: WireServer, model: str) -> dict[str, Any]:
    return server.requests_for(model)[-1]


# -- 1. bind_tools(strict=True) and create_agent's ProviderStrategy ----------------------------------


def test_bind_tools_strict_sends_strict_tools(server: WireServer) -> None:
    both(server, all=ModelScript(answers=["4"]))
    oa(server, "gpt").bind_tools([get_weather], strict=True).invoke("2+2?")
    out = two_tiers(server).bind_tools([get_weather], strict=True).invoke("2+2?")
    assert out.text == "4"
    assert last_body(server, "cheap-1")["tools"] == last_body(server, "gpt")["tools"]
    assert last_body(server, "gpt")["tools"][0]["function"]["strict"] is True


@pytest.mark.parametrize("strict", [True, None])
def test_create_agent_with_provider_strategy(server: WireServer, strict: bool | None) -> None:
    both(server, all=ModelScript(answers=[json.dumps(WEATHER)]))
    got = []
    for model in (oa(server, "gpt"), two_tiers(server)):
        agent = create_agent(model, [get_weather], response_format=ProviderStrategy(Weather, strict=strict))
        got.append(agent.invoke({"messages": [("user", "weather in Paris, 4?")]})["structured_response"])
    assert got[0] == got[1] == Weather(**WEATHER)
    plain, ours = last_body(server, "gpt"), last_body(server, "cheap-1")
    assert ours["tools"] == plain["tools"]
    assert ours["response_format"] == plain["response_format"]


# -- 2. strict json_schema closes every object ---------------------------------------------------------


class Place(BaseModel):
    city: str


class Trip(BaseModel):
    to: Place
    days: int


class TripDict(TypedDict):
    to: str
    days: int


TRIP_SCHEMA = {
    "title": "Trip",
    "type": "object",
    "properties": {
        "to": {"type": "object", "properties": {"city": {"type": "string"}}},
        "days": {"type": "integer"},
    },
}


def closed(schema: Any) -> bool:
    """Whether every object of a JSON schema says ``additionalProperties: false``."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
            return False
        return all(closed(v) for v in schema.values())
    if isinstance(schema, list):
        return all(closed(v) for v in schema)
    return True


@pytest.mark.parametrize("schema", [Trip, TripDict, TRIP_SCHEMA], ids=["pydantic", "typeddict", "dict"])
def test_strict_json_schema_closes_every_object(server: WireServer, schema: Any) -> None:
    answer = json.dumps(
        {"to": {"city": "Oslo"}, "days": 3} if schema is not TripDict else {"to": "Oslo", "days": 3}
    )
    both(server, all=ModelScript(answers=[answer]))
    results = [
        model.with_structured_output(schema, method="json_schema", strict=True).invoke("trip?")
        for model in (oa(server, "gpt"), two_tiers(server))
    ]
    assert results[0] == results[1]
    plain = last_body(server, "gpt")["response_format"]["json_schema"]
    ours = last_body(server, "cheap-1")["response_format"]["json_schema"]
    assert plain["strict"] is ours["strict"] is True
    assert closed(plain["schema"]) and closed(ours["schema"])


# -- 3. when every tier fails, the caller's handlers for the SDK error catch it ---------------------------


def failing(server: WireServer) -> list[Any]:
    both(server, all=ModelScript(fail=[500] * 100))
    server.script("backup", ModelScript(answers=["from the fallback"]))
    ours = two_tiers(server)
    ours = CascadeChatModel(cascade=Cascade([replace_retry(t) for t in ours.cascade.tiers], name="dropin"))
    return [oa(server, "gpt"), ours]


def test_all_tiers_failed_is_caught_as_the_sdk_error(server: WireServer) -> None:
    for model in failing(server):
        with pytest.raises(openai.APIError) as info:
            model.invoke("2+2?")
        assert isinstance(info.value, openai.InternalServerError)
        assert info.value.status_code == 500
    err = info.value
    assert isinstance(err, AllTiersFailedError)  # and still the cascade's error, with its detail
    assert "every tier" in str(err) and len(err.attempts) == 2
    assert isinstance(err.__cause__, openai.InternalServerError)


async def test_all_tiers_failed_is_caught_async_and_streaming(server: WireServer) -> None:
    plain, ours = failing(server)
    for model in (ours, ours.model_copy(update={"stream_final_tier": True})):
        with pytest.raises(openai.InternalServerError):
            await model.ainvoke("2+2?")
        with pytest.raises(openai.InternalServerError):
            [c async for c in model.astream("2+2?")]
        with pytest.raises(openai.InternalServerError):
            list(model.stream("2+2?"))


def test_fallbacks_retry_and_batch_see_the_sdk_error(server: WireServer) -> None:
    prompt = ChatPromptTemplate.from_messages([("user", "{q}")])
    for model in failing(server):
        name = "cheap-1" if isinstance(model, CascadeChatModel) else "gpt"
        fallback = model.with_fallbacks([oa(server, "backup")], exceptions_to_handle=(openai.APIError,))
        assert fallback.invoke("2+2?").text == "from the fallback"
        before = len(server.requests_for(name))
        retried = (prompt | model).with_retry(
            retry_if_exception_type=(openai.InternalServerError,),
            stop_after_attempt=2,
            wait_exponential_jitter=False,
        )
        with pytest.raises(openai.InternalServerError):
            retried.invoke({"q": "2+2?"})
        assert len(server.requests_for(name)) == before + 2  # retried once
        (out,) = model.batch(["2+2?"], return_exceptions=True)
        assert isinstance(out, openai.InternalServerError)


# -- 4. astream_events v2 streams the answer with the default model -----------------------------------------


async def streamed_text(runnable: Any, payload: Any) -> tuple[str, int]:
    """The text of the top-level model's ``on_chat_model_stream`` events, and how many there were."""
    chunks = [
        e["data"]["chunk"]
        async for e in runnable.astream_events(payload, version="v2")
        if e["event"] == "on_chat_model_stream" and e["name"] in ("ChatOpenAI", "CascadeChatModel")
    ]
    return "".join(c.text for c in chunks), len(chunks)


async def test_astream_events_streams_with_the_default_model(server: WireServer) -> None:
    both(server, all=ModelScript(answers=["the answer is 4"]))
    for model in (oa(server, "gpt"), two_tiers(server)):
        text, n = await streamed_text(model, "2+2?")
        assert text == "the answer is 4" and n >= 1


async def test_astream_events_of_an_agent_shows_the_answer(server: WireServer) -> None:
    both(server, all=ModelScript(answers=["sunny, 4 degrees"]))
    for model in (oa(server, "gpt"), two_tiers(server)):
        agent = create_agent(model, [get_weather])
        text, _ = await streamed_text(agent, {"messages": [("user", "weather?")]})
        assert text == "sunny, 4 degrees"


# -- 5. model settings reach every tier; misspelt ones are refused --------------------------------------


SDK_TIERS = """
name: settings
tiers:
  - {name: cheap, provider: openai, model: cheap-1, free: true, options: {base_url: "URL/openai/v1"},
     scorer: {kind: regex, pattern: "nothing matches this"}, threshold: 0.5}
  - {name: mid, provider: langchain, model: mid-1, free: true,
     scorer: {kind: regex, pattern: "nothing matches this"}, threshold: 0.5}
  - {name: strong, provider: langchain, model: strong-1, free: true}
"""
SETTINGS = {"temperature": 0.0, "max_tokens": 50, "top_p": 0.5, "seed": 7}


def sent(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body.get(k) for k in ("temperature", "max_completion_tokens", "max_tokens", "top_p", "seed")}


def test_model_settings_reach_every_tier(server: WireServer, tmp_path: Any, monkeypatch: Any) -> None:
    from langchain.chat_models import init_chat_model

    from cascade.langchain import register_init_chat_model

    monkeypatch.setenv("OPENAI_API_KEY", "k")
    both(server, all=ModelScript(answers=["ok"]))
    server.script("mid-1", ModelScript(answers=["ok"]))
    path = tmp_path / "p.yaml"
    path.write_text(SDK_TIERS.replace("URL", server.url))
    register_init_chat_model()
    plain = init_chat_model("openai:gpt", base_url=f"{server.url}/openai/v1", api_key="k", **SETTINGS)
    plain.invoke("hi")
    providers = {"mid": oa(server, "mid-1"), "strong": oa(server, "strong-1")}
    ours = init_chat_model(f"cascade:{path}", providers=providers, **SETTINGS)
    assert ours.invoke("hi").response_metadata["cascade"]["tier"] == "strong"
    want = sent(last_body(server, "gpt"))
    assert want["temperature"] == 0.0 and want["seed"] == 7
    for name in ("mid-1", "strong-1"):
        assert sent(last_body(server, name)) == want
    cheap = sent(last_body(server, "cheap-1"))  # our OpenAI provider: from the tier's params
    assert (cheap["temperature"], cheap["top_p"], cheap["seed"]) == (0.0, 0.5, 7)
    assert 50 in (cheap["max_tokens"], cheap["max_completion_tokens"])
    assert ours.cascade.tiers[0].max_tokens == 50  # and the budget reserves that many


def test_model_settings_a_tier_cannot_take_are_refused(server: WireServer) -> None:
    with pytest.raises(ConfigurationError, match="takes no seed"):
        two_tiers(server, strong=an(server, "claude-1"), seed=7)
    c = Cascade([tier("cheap", ScriptedProvider(["4"]))])
    with pytest.raises(ConfigurationError, match="temperature=0"):
        CascadeChatModel(cascade=c, temperature=0)


def test_misspelt_arguments_are_refused(server: WireServer, tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="temprature"):
        two_tiers(server, temprature=0)
    path = tmp_path / "p.yaml"
    path.write_text(SDK_TIERS.replace("URL", server.url))
    with pytest.raises(ConfigurationError, match="'temprature' \\(did you mean 'temperature'"):
        CascadeChatModel.from_policy(
            path, providers={"mid": oa(server, "m"), "strong": oa(server, "s")}, temprature=0
        )


# -- 6. stream_final_tier streams provider: openai / anthropic tiers ---------------------------------------


SDK_STREAM = """
name: sdk-stream
tiers:
  - {name: cheap, provider: openai, model: cheap-1, options: {base_url: "URL/openai/v1"}, free: true,
     scorer: {kind: regex, pattern: "nothing matches this"}, threshold: 0.5}
  - {name: strong, provider: PROVIDER, model: strong-1, options: {base_url: "URL/ROUTE"}, free: true}
"""


@pytest.mark.parametrize(("provider", "route"), [("openai", "openai/v1"), ("anthropic", "anthropic")])
async def test_stream_final_tier_streams_sdk_tiers(
    server: WireServer, tmp_path: Any, monkeypatch: Any, provider: str, route: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    answer = "the answer is four, as anyone can check"
    both(server, cheap=ModelScript(answers=["no idea"]), all=ModelScript(answers=[answer]))
    path = tmp_path / "p.yaml"
    path.write_text(
        SDK_STREAM.replace("URL", server.url).replace("PROVIDER", provider).replace("ROUTE", route)
    )
    model = CascadeChatModel.from_policy(path, stream_final_tier=True)
    plain = list(oa(server, "gpt").stream("2+2?"))
    for chunks in (list(model.stream("2+2?")), [c async for c in model.astream("2+2?")]):
        assert "".join(c.text for c in chunks) == answer
        assert len([c for c in chunks if c.text]) == len([c for c in plain if c.text]) > 2  # token by token
        last = chunks[-1]
        assert last.response_metadata["cascade"]["tier"] == "strong"
        assert last.usage_metadata is not None and last.usage_metadata["output_tokens"] > 0
    invoked = model.invoke("2+2?")
    assert invoked.text == answer
    assert invoked.usage_metadata == merged_usage(chunks)


def merged_usage(chunks: list[Any]) -> Any:
    out = chunks[0]
    for c in chunks[1:]:
        out = out + c
    return out.usage_metadata


# -- 7. a rejected tier run is marked, and its answer stays out of event streams --------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_rejected_tier_runs_are_marked_and_kept_out_of_event_streams(
    server: WireServer, mode: str
) -> None:
    both(server, cheap=ModelScript(answers=["REFUSED-ANSWER"]), all=ModelScript(answers=["it is 4"]))
    recorder = Recorder()
    model = two_tiers(server)
    events = [e async for e in model.astream_events("2+2?", version="v2", config={"callbacks": [recorder]})]
    assert "REFUSED-ANSWER" not in repr(events)
    cheap = [e for e in events if e["name"] == "cheap"]
    assert {e["event"] for e in cheap} == {"on_chat_model_start", "on_chat_model_end"}
    assert all(
        "cascade_rejected" in e["tags"] and e["metadata"]["cascade_decision"] == "rejected" for e in cheap
    )
    # a tracer sees the rejected answer, marked
    (run,) = recorder.runs("cheap")
    assert "cascade_rejected" in run["tags"] and run["metadata"]["cascade_decision"] == "rejected"
    assert recorder.ends[run["run_id"]].text == "REFUSED-ANSWER"
    if mode == "sync":
        recorder = Recorder()
        assert model.invoke("2+2?", config={"callbacks": [recorder]}).text == "it is 4"
        (run,) = recorder.runs("cheap")
        assert "cascade_rejected" in run["tags"] and recorder.ends[run["run_id"]].text == "REFUSED-ANSWER"


def test_accepted_tier_runs_are_marked(server: WireServer) -> None:
    both(server, all=ModelScript(answers=["it is 4"]))
    recorder = Recorder()
    two_tiers(server).invoke("2+2?", config={"callbacks": [recorder]})
    (run,) = recorder.runs("cheap")
    assert "cascade_accepted" in run["tags"] and run["metadata"]["cascade_decision"] == "accepted"


# -- 8. structured output asks as ChatOpenAI does --------------------------------------------------------


def test_structured_output_defaults_to_strict_json_schema(server: WireServer) -> None:
    both(server, all=ModelScript(answers=[json.dumps(WEATHER)]))
    got = [
        model.with_structured_output(Weather, include_raw=True).invoke("weather?")
        for model in (oa(server, "gpt"), two_tiers(server))
    ]
    plain, ours = last_body(server, "gpt"), last_body(server, "cheap-1")
    assert ours["response_format"]["type"] == plain["response_format"]["type"] == "json_schema"
    assert (
        ours["response_format"]["json_schema"]["strict"]
        is plain["response_format"]["json_schema"]["strict"]
        is True
    )
    assert closed(ours["response_format"]["json_schema"]["schema"])
    assert got[0]["parsed"] == got[1]["parsed"] == Weather(**WEATHER)
    assert (
        got[0]["raw"].additional_kwargs["parsed"]
        == got[1]["raw"].additional_kwargs["parsed"]
        == Weather(**WEATHER)
    )


def test_function_calling_keeps_strict_and_sends_no_parallel_calls(server: WireServer) -> None:
    both(server, all=ModelScript(tool=WEATHER))
    for model in (oa(server, "gpt"), two_tiers(server)):
        structured = model.with_structured_output(Weather, method="function_calling", strict=True)
        assert structured.invoke("weather?") == Weather(**WEATHER)
    plain, ours = last_body(server, "gpt"), last_body(server, "cheap-1")
    assert ours["tools"] == plain["tools"] and plain["tools"][0]["function"]["strict"] is True
    assert ours["parallel_tool_calls"] is plain["parallel_tool_calls"] is False


# -- 9. refusals ----------------------------------------------------------------------------------------------


def test_refusal_is_kept(server: WireServer) -> None:
    both(server, all=ModelScript(refusal="I can't help with that"))
    for model in (oa(server, "gpt"), two_tiers(server)):
        assert model.invoke("2+2?").additional_kwargs["refusal"] == "I can't help with that"


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_refusal_raises_the_refusal_error_without_the_strong_tier(
    server: WireServer, method: str
) -> None:
    from langchain_openai.chat_models.base import OpenAIRefusalError

    both(server, all=ModelScript(refusal="I can't help with that"))
    for model in (oa(server, "gpt"), two_tiers(server)):
        with pytest.raises(OpenAIRefusalError, match="can't help"):
            model.with_structured_output(Weather, method=method).invoke("weather?")  # type: ignore[arg-type]
    assert server.requests_for("strong-1") == []  # the cheap tier's refusal is final


# -- 10. ChatAnthropic answers keep their content blocks ------------------------------------------------------


async def test_anthropic_tier_keeps_text_and_tool_use_blocks(server: WireServer) -> None:
    both(server, cheap=ModelScript(answers=["no idea"]), all=ModelScript(tool={"city": "Paris"}))
    server.script("claude-1", ModelScript(tool={"city": "Paris"}))
    plain = an(server, "claude-1").bind_tools([get_weather]).invoke("weather in Paris?")
    model = two_tiers(server, strong=an(server, "strong-1")).bind_tools([get_weather])
    for ours in (model.invoke("weather in Paris?"), await model.ainvoke("weather in Paris?")):
        assert isinstance(ours.content, list) and isinstance(plain.content, list)
        assert [b["type"] for b in ours.content] == [b["type"] for b in plain.content] == ["text", "tool_use"]
        assert ours.content[0]["text"] == plain.content[0]["text"] == "Let me check."
        assert ours.content[1]["input"] == plain.content[1]["input"] == {"city": "Paris"}
        assert [c["args"] for c in ours.tool_calls] == [c["args"] for c in plain.tool_calls]
        assert ours.tool_calls[0]["id"] == ours.content[1]["id"]


# -- 11. logprobs and reasoning tokens ---------------------------------------------------------------------


def test_logprobs_and_reasoning_tokens_are_kept(server: WireServer) -> None:
    both(server, all=ModelScript(answers=["it is 4"], reasoning_tokens=5))
    got = [m.bind(logprobs=True).invoke("2+2?") for m in (oa(server, "gpt"), two_tiers(server))]
    assert got[1].response_metadata["logprobs"] == got[0].response_metadata["logprobs"]
    assert got[1].response_metadata["logprobs"]["content"]
    assert got[0].usage_metadata is not None and got[1].usage_metadata is not None
    assert got[1].usage_metadata["output_token_details"]["reasoning"] == 5
    assert got[0].usage_metadata["output_token_details"]["reasoning"] == 5


# -- the schema gate: a structured-output request never accepts an answer that does not parse --------------


@pytest.mark.parametrize("method", ["json_schema", "json_mode", "function_calling"])
def test_an_answer_that_does_not_fit_the_schema_is_never_accepted(server: WireServer, method: str) -> None:
    bad = {"city": "Paris"}  # no temp
    server.script("cheap-1", ModelScript(answers=["{not json"], tool=bad))
    server.script("strong-1", ModelScript(answers=[json.dumps(WEATHER)], tool=WEATHER))
    c = Cascade(
        [tier("cheap", oa(server, "cheap-1"), FixedScorer(1.0), 0.5), tier("strong", oa(server, "strong-1"))]
    )
    out = CascadeChatModel(cascade=c).with_structured_output(Weather, method=method, include_raw=True)  # type: ignore[arg-type]
    got = out.invoke("weather?")
    assert got["parsed"] == Weather(**WEATHER)  # type: ignore[index]
    assert got["raw"].response_metadata["cascade"]["tier"] == "strong"  # type: ignore[index]


# -- 12. a cancelled astream ends the final tier's run with CancelledError -----------------------------------


async def test_a_cancelled_astream_ends_the_tier_run(server: WireServer) -> None:
    both(server, cheap=ModelScript(answers=["no idea"]), all=ModelScript(answers=["four"], sleep=3.0))
    cases = (
        (oa(server, "gpt"), 1, None, "gpt"),
        (two_tiers(server, stream_final_tier=True), 3, "strong", "strong-1"),
    )
    for model, starts, name, wire_model in cases:
        recorder = Recorder()
        sent = len(server.requests_for(wire_model))

        async def consume(m: Any = model, r: Recorder = recorder) -> None:
            async for _ in m.astream("2+2?", config={"callbacks": [r]}):
                pass

        task = asyncio.create_task(consume())
        async with asyncio.timeout(30):  # long caps: a loaded machine may take seconds; a pass is quick
            # the (last) model's call is under way: its run started and its request reached the server
            # (ChatOpenAI cancelled between the two sometimes reported no error for its run, under load)
            while len(recorder.starts) < starts or len(server.requests_for(wire_model)) == sent:
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (run,) = [s for s in recorder.starts if s["name"] == name]
        async with asyncio.timeout(30):  # a sync handler's events may arrive from an executor thread
            while run["run_id"] not in recorder.errors:
                await asyncio.sleep(0.01)
        assert isinstance(recorder.errors.get(run["run_id"]), asyncio.CancelledError), name


# -- 13-15. model_copy, LangSmith params, model_dump_json ----------------------------------------------------


def test_model_copy_with_another_cascade_runs_it(server: WireServer) -> None:
    both(server, all=ModelScript(answers=["it is 4"]))
    server.script("other-1", ModelScript(answers=["from the other cascade"]))
    model = two_tiers(server)
    other = Cascade([tier("other", oa(server, "other-1"))], name="other")
    copied = model.model_copy(update={"cascade": other})
    assert copied.invoke("2+2?").text == "from the other cascade"
    assert copied._get_ls_params()["ls_model_name"] == "other"
    assert model.invoke("2+2?").text == "it is 4"  # the original is untouched


def test_langsmith_params_have_temperature_max_tokens_and_stop(server: WireServer) -> None:
    both(server, all=ModelScript(answers=["it is 4"]))
    runs = []
    for model in (
        oa(server, "gpt", temperature=0.2, max_tokens=40),
        two_tiers(server, temperature=0.2, max_tokens=40),
    ):
        recorder = Recorder()
        model.invoke("2+2?", stop=["\n"], config={"callbacks": [recorder]})
        runs.append(recorder.starts[0]["metadata"])
        for stop in (None, ["\n"]):
            ls = model._get_ls_params(stop=stop)
            assert (ls.get("ls_temperature"), ls.get("ls_max_tokens"), ls.get("ls_stop")) == (0.2, 40, stop)
    keys = ("ls_temperature", "ls_max_tokens", "ls_stop")
    assert [runs[1].get(k) for k in keys] == [runs[0].get(k) for k in keys] == [0.2, 40, ["\n"]]


def test_model_dump_json(server: WireServer) -> None:
    plain = json.loads(oa(server, "gpt").model_dump_json())
    ours = json.loads(two_tiers(server, temperature=0.2).model_dump_json())
    assert plain["model_name"] == "gpt"
    assert ours["cascade"] == {"policy": "dropin", "tiers": ["cheap:cheap-1", "strong:strong-1"]}
    assert ours["temperature"] == 0.2


def test_structured_output_defaults_to_a_tool_call_with_sdk_tiers(
    server: WireServer, tmp_path: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    both(server, all=ModelScript(answers=["no"], tool=WEATHER))
    path = tmp_path / "p.yaml"
    path.write_text(
        SDK_STREAM.replace("URL", server.url).replace("PROVIDER", "openai").replace("ROUTE", "openai/v1")
    )
    model = CascadeChatModel.from_policy(path)
    assert model.with_structured_output(Weather).invoke("weather?") == Weather(**WEATHER)
    body = last_body(server, "cheap-1")  # our OpenAI provider takes no response_format: the tool travels
    assert "response_format" not in body and body["tools"][0]["function"]["name"] == "Weather"
