"""A LangChain agent (``create_agent``) whose model is a cascade, with two tools.

The cheap tier answers most turns; when its tool call does not fit the tool's schema (the
``tool_args`` scorer checks the arguments), the strong tier answers that turn instead, and the
agent never sees the rejected call. Spend is capped per tenant, taken from the run's metadata.

Runs offline with scripted chat models standing in for real ones. ``create_agent`` comes from the
``langchain`` package (in the ``test`` and ``dev`` extras; ``pip install langchain`` otherwise).

    python examples/langchain_agent.py
"""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Any

try:
    from langchain.agents import create_agent
except ImportError:
    sys.exit("this example needs the langchain package: pip install 'langchain>=1.0,<2' (or the dev extra)")
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from cascade import BudgetExceededError
from cascade.budget.memory import MemoryLedger
from cascade.langchain import CascadeChatModel, ScriptedChatModel
from cascade.policy.loader import loads

POLICY = """
name: weather-agent
tiers:
  - name: cheap
    provider: langchain
    model: cheap-model
    price: {input: 0.15, output: 0.60}
    params: {max_tokens: 50}        # also bounds the budget reserved before each call
    scorer: {kind: tool_args}       # tool calls must fit the tool's JSON schema
    threshold: 1.0
  - name: strong
    provider: langchain
    model: strong-model
    price: {input: 2.50, output: 10.00}
    params: {max_tokens: 50}
budget:
  caps:
    - {limit: 0.002, window: day, scope: key}   # per tenant (metadata["tenant_id"])
  on_exceeded: raise    # in an agent, stop the run rather than hand back a rejected tool call
  ledger: {kind: memory}
"""


@tool
def get_weather(city: str) -> str:
    """Current weather in a city, in Celsius."""
    return f"{city}: 20C, sunny"


@tool
def convert(celsius: float, unit: str) -> str:
    """Convert a Celsius temperature to "F" or "K"."""
    return f"{celsius * 9 / 5 + 32:.0f}F" if unit == "F" else f"{celsius + 273.15:.2f}K"


def call(name: str, args: dict[str, object], id: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": id, "type": "tool_call"}])


def build_agent(ledger: MemoryLedger) -> tuple[CascadeChatModel, Any]:
    """A fresh agent (its scripted models start their scripts again) sharing ``ledger``."""
    cheap = ScriptedChatModel(
        model="cheap-model",
        script=[
            call("get_weather", {"town": "Paris"}, "c1"),  # wrong argument name: the scorer rejects it
            call("convert", {"celsius": 20, "unit": "F"}, "c2"),
            "It is 68F and sunny in Paris.",
        ],
        input_tokens=200,
        output_tokens=20,
    )
    strong = ScriptedChatModel(
        model="strong-model",
        script=[call("get_weather", {"city": "Paris"}, "s1")],
        input_tokens=200,
        output_tokens=20,
    )
    model = CascadeChatModel.from_policy(
        loads(POLICY), providers={"cheap": cheap, "strong": strong}, ledger=ledger
    )
    return model, create_agent(model, tools=[get_weather, convert])


def main() -> None:
    ledger = MemoryLedger()
    model, agent = build_agent(ledger)
    question = {"messages": [("user", "What is the weather in Paris, in Fahrenheit?")]}
    tenant = {"metadata": {"tenant_id": "acme"}}
    out = agent.invoke(question, config=tenant)
    for m in out["messages"]:
        if isinstance(m, AIMessage):
            t = m.response_metadata["cascade"]
            what = ", ".join(f"{c['name']}({c['args']})" for c in m.tool_calls) or repr(m.text)
            steps = " -> ".join(f"{a['tier']}:{a['decision']}" for a in t["attempts"])
            print(f"model  {what:<45} [{steps}] ${t['cost']}")
        elif isinstance(m, ToolMessage):
            print(f"tool   {m.name}: {m.content}")
        else:
            print(f"user   {m.text}")
    rejected = out["messages"][1].response_metadata["cascade"]["attempts"][0]
    print(f"\nwhy turn 1 escalated: {rejected['score_detail']['errors']}")
    spent = sum(
        Decimal(m.response_metadata["cascade"]["cost"]) for m in out["messages"] if isinstance(m, AIMessage)
    )
    print(f"this conversation cost ${spent:.6f}")

    # the same tenant keeps asking: its daily cap stops the agent before it overspends
    conversations = 1
    try:
        while conversations < 100:
            _, agent = build_agent(ledger)
            agent.invoke(question, config=tenant)
            conversations += 1
    except BudgetExceededError as exc:
        print(f"tenant acme stopped during conversation {conversations + 1}: {exc}")
    ((bucket, cap),) = model.cascade.settings.budget.buckets(model.cascade.name, "acme")
    print(f"acme spent ${ledger.spent(bucket)} of its ${cap} daily cap")


if __name__ == "__main__":
    main()
