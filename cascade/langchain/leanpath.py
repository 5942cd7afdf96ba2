"""The lean ``invoke``: ``BaseChatModel.generate``'s run reporting, without its per-call machinery."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import LLMResult
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.runnables.config import var_child_runnable_config

from cascade.langchain.lean import _lc
from cascade.langchain.messages import _total, _unreported
from cascade.langchain.runs import _in_scope, _Scope

if TYPE_CHECKING:
    from cascade.engine.cascade import Cascade
    from cascade.request import Request
    from cascade.types import CascadeResult

_Manager = TypeVar("_Manager", CallbackManager, AsyncCallbackManager)


class _LeanPath(BaseChatModel):
    """:class:`~cascade.langchain.CascadeChatModel`'s lean ``invoke`` and ``ainvoke``."""

    if TYPE_CHECKING:
        stream_final_tier: bool
        _traced: Cascade
        _ls: dict[str, Any]

        def _prepare(
            self,
            messages: list[BaseMessage],
            stop: list[str] | None,
            run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
            kwargs: dict[str, Any],
            run_metadata: dict[str, Any] | None = None,
        ) -> _Scope: ...

        def _session(self, request: Request) -> str | None: ...

        def _answered(self, result: CascadeResult) -> CascadeResult: ...

    # -- the lean path: BaseChatModel.generate's run reporting, without its per-call machinery ---------

    def _lean(self) -> bool:
        """Whether ``invoke`` may skip ``BaseChatModel.generate`` (no cache, rate limiter, live
        streaming or v1 output to honour): the same run is reported, at a fraction of the cost."""
        if (
            _lc is None
            or self.stream_final_tier
            or self.rate_limiter is not None
            or self.output_version == "v1"
        ):
            return False
        return self.cache is False or (self.cache is None and _lc.get_llm_cache() is None)

    def _lean_start(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None,
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> tuple[RunnableConfig, list[BaseMessage], dict[str, Any]]:
        assert _lc is not None
        if var_child_runnable_config.get() is not None:
            config = ensure_config(config)  # merges an enclosing runnable's config
        else:  # a copy: popping run_id must not touch the caller's dict
            config = RunnableConfig(**config) if config else RunnableConfig()
        if isinstance(input, str):
            messages: list[BaseMessage] = [HumanMessage(input)]
        elif isinstance(input, list) and all(isinstance(m, BaseMessage) for m in input):
            messages = list(input)
        else:
            messages = self._convert_input(input).to_messages()
        fmt = kwargs.pop("ls_structured_output_format", None) or kwargs.pop("structured_output_format", None)
        params = self._get_invocation_params(stop=stop, **kwargs)
        start = {
            "invocation_params": params,
            "options": {"stop": stop, **_lc.format_ls_structured_output(fmt)},
            "name": config.get("run_name"),
            "run_id": config.pop("run_id", None),
            "batch_size": 1,
        }
        configure = (
            (config.get("callbacks"), self.callbacks, self.verbose, config.get("tags"), self.tags),
            {
                "inheritable_metadata": {
                    **(config.get("metadata") or {}),
                    **(
                        self._get_ls_params_with_defaults(stop=stop, **kwargs) if stop or kwargs else self._ls
                    ),
                },
                "local_metadata": self.metadata,
                "langsmith_inheritable_metadata": _lc.filter_invocation_params_for_tracing(params),
            },
        )
        return config, messages, {"start": start, "configure": configure}

    def _unheard(self, config: RunnableConfig, named: dict[str, Any]) -> dict[str, Any] | None:
        """The run's metadata (as configure would merge it) when surely nobody listens, else None."""
        check = _lc.nobody_listens if _lc is not None else None
        if check is None or not check(config.get("callbacks"), self.callbacks, self.verbose):
            return None
        return {**named["inheritable_metadata"], **(named["local_metadata"] or {})}

    def _lean_begin(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None,
        stop: list[str] | None,
        kwargs: dict[str, Any],
        configure: Callable[..., _Manager],
    ) -> tuple[list[BaseMessage], dict[str, Any], _Manager | None, _Scope | None]:
        """The messages, the run's start arguments, and either the run's callback manager or (when
        nobody listens) the scope to run in without reporting a run."""
        config, messages, how = self._lean_start(input, config, stop, kwargs)
        args, named = how["configure"]
        metadata = self._unheard(config, named)
        manager = None if metadata is not None else configure(*args, **named)
        if manager is not None and not manager.handlers and not manager.inheritable_handlers:
            metadata = manager.metadata
        if metadata is None:
            return messages, how, manager, None
        return messages, how, manager, self._prepare(messages, stop, None, kwargs, metadata)

    def _lean_invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None,
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> AIMessage:
        assert _lc is not None
        messages, how, manager, scope = self._lean_begin(
            input, config, stop, kwargs, CallbackManager.configure
        )
        if scope is not None:  # nobody listens: no run to report
            with _in_scope(scope):
                answer = self._answered(self._traced.run(scope.request, session=self._session(scope.request)))
            return _unreported(answer, how["start"]["run_id"], scope)
        assert manager is not None
        (run,) = manager.on_chat_model_start(
            self._serialized, [_lc.format_for_tracing(messages)], **how["start"]
        )
        try:
            result = self._generate(messages, stop=stop, run_manager=run, **kwargs)
        except BaseException as exc:
            run.on_llm_error(exc, response=LLMResult(generations=[]))
            raise
        generation = result.generations[0]
        if generation.message.id is None:
            generation.message.id = f"{_lc.LC_ID_PREFIX}-{run.run_id}-0"
        run.on_llm_end(LLMResult(generations=[[generation]], llm_output=result.llm_output))
        out = _total(generation.message)
        assert isinstance(out, AIMessage)
        return out

    async def _lean_ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None,
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> AIMessage:
        assert _lc is not None
        messages, how, manager, scope = self._lean_begin(
            input, config, stop, kwargs, AsyncCallbackManager.configure
        )
        if scope is not None:  # nobody listens: no run to report
            with _in_scope(scope):
                answer = self._answered(
                    await self._traced.arun(scope.request, session=self._session(scope.request))
                )
            return _unreported(answer, how["start"]["run_id"], scope)
        assert manager is not None
        (run,) = await manager.on_chat_model_start(
            self._serialized, [_lc.format_for_tracing(messages)], **how["start"]
        )
        try:
            result = await self._agenerate(messages, stop=stop, run_manager=run, **kwargs)
        except BaseException as exc:
            await run.on_llm_error(exc, response=LLMResult(generations=[]))
            raise
        generation = result.generations[0]
        if generation.message.id is None:
            generation.message.id = f"{_lc.LC_ID_PREFIX}-{run.run_id}-0"
        await run.on_llm_end(LLMResult(generations=[[generation]], llm_output=result.llm_output))
        out = _total(generation.message)
        assert isinstance(out, AIMessage)
        return out
