"""A LangChain chain (prompt | model | parser) where the model is a cascade.

The one-line swap: ``model = ChatOpenAI(model="gpt-4o")`` becomes
``model = CascadeChatModel.from_policy(POLICY, providers={...})``; the chain does not change.

This runs offline: two scripted chat models stand in for a small and a large model (swap in
``ChatOpenAI``, ``ChatAnthropic``, ``ChatOllama``... in real use). The small model is unsure
about one question; the cascade sends that one to the large model and says so.

    python examples/langchain_chain.py
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from cascade.langchain import CascadeChatModel, ScriptedChatModel, explain
from cascade.policy.loader import loads

POLICY = """
name: faq
tiers:
  - name: small
    provider: langchain            # the chat model is passed in Python below
    model: small-model
    price: {input: 0.15, output: 0.60}
    scorer: {kind: regex, pattern: "(?i)not sure|don't know", invert: true}
    threshold: 0.5
  - name: large
    provider: langchain
    model: large-model
    price: {input: 2.50, output: 10.00}
"""

SMALL = {
    "France": "Paris.",
    "Japan": "Tokyo.",
    "Australia": "I'm not sure, maybe Sydney?",
}
LARGE = {"France": "Paris.", "Japan": "Tokyo.", "Australia": "Canberra."}


def answer_from(table: dict[str, str]) -> Callable[[list[BaseMessage], dict[str, object]], str]:
    """A scripted model's answer: look the question's country up in ``table``."""

    def answer(messages: list[BaseMessage], _: dict[str, object]) -> str:
        question = messages[-1].text
        return next((a for country, a in table.items() if country in question), "I don't know.")

    return answer


def main() -> None:
    small = ScriptedChatModel(
        model="small-model", script=[answer_from(SMALL)], input_tokens=30, output_tokens=8
    )
    large = ScriptedChatModel(
        model="large-model", script=[answer_from(LARGE)], input_tokens=30, output_tokens=8
    )
    model = CascadeChatModel.from_policy(loads(POLICY), providers={"small": small, "large": large})

    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer with the city name only."), ("human", "What is the capital of {country}?")]
    )
    chain = prompt | model | StrOutputParser()
    traced = prompt | model  # the same chain without the parser keeps the decision trace

    total = Decimal(0)
    for country in ("France", "Japan", "Australia"):
        message = traced.invoke({"country": country})
        trace = message.response_metadata["cascade"]
        total += Decimal(trace["cost"])
        who = f"{trace['tier']} ({trace['model']})"
        print(f"{country:<10} -> {message.text:<10} answered by {who}, ${trace['cost']}")
    print()
    print(explain(traced.invoke({"country": "Australia"})))
    print()
    print("chain output:", repr(chain.invoke({"country": "Japan"})))
    large_only = 3 * (30 * Decimal("2.50") + 8 * Decimal("10.00")) / 1_000_000
    print(f"cascade cost for the three questions: ${total:.6f} (large model alone: ${large_only:.6f})")


if __name__ == "__main__":
    main()
