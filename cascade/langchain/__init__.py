"""The LangChain front: :class:`CascadeChatModel`, a chat model that runs a cascade.

Swap any chat model for a cascade with one line, in chains and in agents::

    from cascade.langchain import CascadeChatModel

    model = CascadeChatModel.from_policy("support.yaml", providers={"cheap": ChatOpenAI(...)})
    agent = create_agent(model, tools=[search, lookup])

- ``bind_tools`` binds the tools on every tier (they travel on the request) and returns a copy, as
  ``ChatOpenAI.bind_tools`` (``strict``, ``response_format``); ``with_structured_output`` asks as
  ChatOpenAI's (default ``json_schema``, strict for pydantic; ``function_calling``; ``json_mode``:
  tiers with no JSON mode, ChatAnthropic, get the schema as ``json_schema`` instead) and streams.
  Tool calls flow through to the caller; a scorer reads a tool-call answer's arguments as its text
  (JSON); an answer that does not fit the requested schema is never accepted (checked first).
- Call options (``bind(temperature=..., max_tokens=...)``, ``parallel_tool_calls``,
  ``response_format``) reach LangChain tiers; tiers of other providers warn that they ignore them.
- Every tier call is a child run of the cascade's run (callbacks, tags and metadata inherited,
  the constructor's ``callbacks=``/``tags=`` too), tagged ``nostream`` so rejected candidates never
  reach an agent's message stream.
- Token accounting: the returned message's ``usage_metadata`` is everything the request spent
  (every tier tried and every scorer). In the run tree each token is reported once: tier runs
  report their own calls, and the cascade's run reports only what no child run did (scorer
  calls, estimates), so ``UsageMetadataCallbackHandler`` or a sum over runs equals the total.
  ``response_metadata`` has ``model_name`` and ``finish_reason`` of the answer and, under
  ``"cascade"``, the decision trace (:meth:`CascadeResult.to_dict`).
- Streaming: ``stream`` yields one chunk by default. With ``stream_final_tier=True`` the last
  tier streams live when it is reached and its answer is final (no scorer on it, or
  ``on_exhausted: return_last``); earlier tiers never stream. Each token reaches listeners once,
  from the cascade's run. A stream without usage is billed from an estimate (prompt included).
  A last tier whose model already answered in the run is reused, not streamed again; a stream
  closed or cancelled mid-call settles its budget hold through the driver (awaited in ``astream``).
- With no callback handler anywhere (no callbacks, tracing or hooks), ``invoke``/``ainvoke``
  report no run (nobody would receive it) and return the same message, at less cost.
- The budget key (per-tenant caps) comes from the ``budget_key`` call argument or from the run's
  metadata under ``budget_key_metadata`` (default ``"tenant_id"``).
- Messages reach LangChain tiers as given (images and content blocks included) and other tiers as
  text; a request with images or files fails with :class:`~cascade.errors.InvalidRequestError`
  when a tier takes text only. ``stop`` reaches LangChain tiers. A budget stop with no answer yet
  raises :class:`~cascade.errors.BudgetExceededError`. When every tier fails, the error is an
  :class:`~cascade.errors.AllTiersFailedError` that is also an instance of the last tier's error
  type (``openai.InternalServerError``...), with its attributes and as ``__cause__``, so a
  caller's ``except``, ``with_fallbacks`` and ``with_retry`` for the SDK error catch it.

:class:`~cascade.testing.ScriptedChatModel` (re-exported here) is a scripted LangChain chat model
for tests and offline demos. Importing this module imports LangChain; ``import cascade`` does not.
"""

from __future__ import annotations

from cascade._testing_langchain import ScriptedChatModel
from cascade.langchain.lean import _lc as _lc
from cascade.langchain.messages import from_langchain_messages, to_ai_message
from cascade.langchain.model import _JSON_FALLBACK as _JSON_FALLBACK
from cascade.langchain.model import CascadeChatModel, register_init_chat_model
from cascade.langchain.trace import explain
from cascade.langchain.trace import trace as trace
from cascade.providers.langchain import usage_metadata

__all__ = [
    "CascadeChatModel",
    "ScriptedChatModel",
    "explain",
    "from_langchain_messages",
    "register_init_chat_model",
    "to_ai_message",
    "usage_metadata",
]
