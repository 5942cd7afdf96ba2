""":class:`CascadeChatModel`, the chat model that runs a cascade."""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
)
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    ensure_config,
)
from langchain_core.runnables.retry import RunnableRetry
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, PrivateAttr, field_serializer

from cascade.engine.actions import Call
from cascade.engine.cascade import Cascade
from cascade.engine.drive import AsyncStep, Executed, Step, aexecute, execute
from cascade.engine.loop import Action
from cascade.errors import (
    AbstainedError,
    AllTiersFailedError,
    ConfigurationError,
    InvalidRequestError,
    ProviderError,
)
from cascade.langchain.leanpath import _LeanPath
from cascade.langchain.messages import (
    _as_chunk,
    _final_chunk,
    _has_media,
    _list_content,
    _public,
    _reported_message,
    _total,
    from_langchain_messages,
)
from cascade.langchain.runs import (
    _cause_matcher,
    _child_callbacks,
    _in_scope,
    _OpenRuns,
    _Parent,
    _release_held,
    _Scope,
    _scope,
    _streamed_outcome,
    _TierRun,
    _traced,
    _wants_tokens,
    _with_cause,
)
from cascade.langchain.structured import _response_format, _Structured, _with_parser
from cascade.logging import get_logger
from cascade.providers._sdk import estimate_input_tokens
from cascade.providers.langchain import (
    LangChainProvider,
    has_json_mode,
)
from cascade.request import Request
from cascade.types import CascadeResult

_PARENT_KWARG = "_cascade_parent"
_JSON_FALLBACK = "cascade_json_schema_fallback"  # json_mode's schema format, for tiers with no JSON mode
_STRUCTURED = "cascade_structured_output"  # with_structured_output's method and schema, for the front only
_NOT_OPTIONS = (
    _JSON_FALLBACK,
    _STRUCTURED,
    "budget_key",
    "tools",
    "tool_choice",
    "ls_structured_output_format",
    "structured_output_format",
)


# -- the chat model ------------------------------------------------------------------------------


class CascadeChatModel(_LeanPath):
    """A LangChain chat model that answers through a :class:`~cascade.Cascade`.

    Build it from a policy (``CascadeChatModel.from_policy("policy.yaml", providers={...})``) or
    a cascade (``CascadeChatModel(cascade=cascade)``). Tiers may be our providers or any
    LangChain chat models.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    cascade: Cascade
    temperature: float | None = None
    """Model settings (``temperature``, ``max_tokens``, ``top_p``, ``seed``): sent to every tier.
    :meth:`from_policy` writes them into every tier's ``params``; LangChain tiers get them with each
    call; a tier that cannot take one is refused when the model is built."""
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    tools: tuple[dict[str, Any], ...] = ()
    """Tools bound with :meth:`bind_tools` (OpenAI format), sent to every tier."""
    tool_choice: str | dict[str, Any] | None = None
    stream_final_tier: bool = False
    """Stream the last tier live when it is reached (its answer being final)."""
    budget_key_metadata: str | None = "tenant_id"
    """Run-metadata key whose value scopes per-key budget caps."""
    session_metadata: tuple[str, ...] = ("session_id", "thread_id")
    """Run-metadata keys (first present wins) naming the session, for the policy's session pinning."""
    abstain_message: str | None = None
    """When the run abstains (``on_unverified: abstain``): answer with this message instead of
    raising :class:`~cascade.errors.AbstainedError`."""

    _traced: Cascade = PrivateAttr()
    _text_only: tuple[str, ...] = PrivateAttr(())
    _ident: dict[str, Any] = PrivateAttr(default_factory=dict)
    _ls: dict[str, Any] = PrivateAttr(default_factory=dict)
    _settings: dict[str, Any] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        self._settings = {k: getattr(self, k) for k in _SETTINGS if getattr(self, k) is not None}
        if self._settings:
            _check_settings(self.cascade, self._settings)
        self._traced = _traced(self.cascade)
        self._ident = {
            "policy": self.cascade.name,
            "tiers": [f"{t.name}:{t.provider.model}" for t in self.cascade.tiers],
        }
        self._ls = dict(self._get_ls_params_with_defaults())
        self._text_only = tuple(
            f"{t.name} ({t.provider_kind or type(t.provider).__name__})"
            for t in self.cascade.tiers
            if not isinstance(t.provider, LangChainProvider)
        )

    @field_serializer("cascade")
    def _dump_cascade(self, cascade: Cascade) -> dict[str, Any]:
        """The cascade as data (``model_dump``/``model_dump_json``): its policy name and tiers."""
        return {"policy": cascade.name, "tiers": [f"{t.name}:{t.provider.model}" for t in cascade.tiers]}

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> CascadeChatModel:
        """A copy; one with another ``cascade`` (or model settings) runs that one (rebuilt, checked)."""
        copied = super().model_copy(update=update, deep=deep)
        if update and ("cascade" in update or any(k in update for k in _SETTINGS)):
            copied.model_post_init(None)
        return copied

    @classmethod
    def from_policy(
        cls,
        policy: Any,
        *,
        providers: dict[str, Any] | None = None,
        ledger: Any = None,
        **kwargs: Any,
    ) -> CascadeChatModel:
        """Build from a policy file (or :class:`~cascade.policy.Policy`); ``providers`` maps tier
        names to provider objects or LangChain chat models; other arguments set fields.

        A chat model passed in gets its tier's ``timeout:`` (enforced around the whole call)."""
        from cascade.policy import loader
        from cascade.policy.schema import Policy
        from cascade.registry import suggest

        for name in kwargs:  # before building anything: a misspelt setting must not vanish
            if name not in cls.model_fields:
                raise ConfigurationError(f"unknown argument {name!r}{suggest(name, cls.model_fields)}")
        overrides: dict[str, Any] = {}
        if providers is not None:
            overrides["providers"] = providers
        if ledger is not None:
            overrides["ledger"] = ledger
        settings = {k: kwargs[k] for k in _SETTINGS if kwargs.get(k) is not None}
        if settings:  # written into every tier's params: sent, and reserved (max_tokens), by every tier
            if not isinstance(policy, Policy):
                overrides["base_dir"] = Path(policy).parent
            policy = _with_params(policy if isinstance(policy, Policy) else loader.load(policy), settings)
        built = Cascade.from_policy(policy, **overrides)
        if providers:
            spec = policy if isinstance(policy, Policy) else loader.load(policy)
            timeouts = {t.name: t.timeout for t in spec.tiers}
            for t in built.tiers:
                if (
                    t.name in providers
                    and isinstance(t.provider, LangChainProvider)
                    and t.provider.timeout is None
                ):
                    t.provider.timeout = timeouts.get(t.name)
        return cls(cascade=built, **kwargs)

    # -- LangChain plumbing ---------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "cascade"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return dict(self._ident)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """As ChatOpenAI's: the call's (else the model's) temperature, max_tokens and stop."""
        params = LangSmithParams(ls_provider="cascade", ls_model_name=self.cascade.name, ls_model_type="chat")
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or kwargs.get("stop"):
            params["ls_stop"] = stop or kwargs["stop"]
        return params

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        kwargs.pop(_PARENT_KWARG, None)
        kwargs.pop(_STRUCTURED, None)
        return {**self._ident, "_type": "cascade", "stop": stop, **kwargs}

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """The cascade's own (conservative) estimate: no tokenizer download."""
        tool_dicts = tuple(convert_to_openai_tool(t) for t in tools or ())
        return estimate_input_tokens(Request(from_langchain_messages(messages), tools=tool_dicts))

    def get_num_tokens(self, text: str) -> int:
        return self.get_num_tokens_from_messages([HumanMessage(text)])

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        response_format: dict[str, Any] | type | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """A copy whose every tier gets ``tools`` (and ``tool_choice``) with each request, as
        ``ChatOpenAI.bind_tools``: ``strict`` makes the tool schemas strict, ``response_format``
        (which makes them strict unless ``strict=False``) and ``parallel_tool_calls`` are bound as
        call options, and so are other arguments."""
        choice: str | dict[str, Any] | None
        if tool_choice is True:
            choice = "any"
        elif tool_choice is False:
            choice = None
        else:
            choice = tool_choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        if response_format and strict is not False:  # OpenAI wants every tool strict beside it
            strict = True
        formatted = tuple(convert_to_openai_tool(t, strict=strict) for t in tools)
        if response_format:
            schema = response_format
            if (
                isinstance(schema, dict)
                and schema.get("type") == "json_schema"
                and "schema" in schema.get("json_schema", {})
            ):  # create_agent's form: its own ``strict``, as ChatOpenAI reads it
                strict = schema["json_schema"].get("strict")
                schema = schema["json_schema"]["schema"]
            kwargs["response_format"] = _response_format(schema, strict)
        bound = self.model_copy(update={"tools": formatted, "tool_choice": choice})
        return bound.bind(**kwargs) if kwargs else bound

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["function_calling", "json_schema", "json_mode"] | None = None,
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """As ``ChatOpenAI.with_structured_output``: ``json_schema`` (the default; strict for a
        pydantic model unless ``strict=False``) and ``json_mode`` send ``response_format`` to every
        tier, ``function_calling`` forces a call of the schema's tool (``parallel_tool_calls``
        false, ``strict`` kept). A pydantic answer's raw message has ``additional_kwargs["parsed"]``.
        With a tier that is not a LangChain model (our providers take no ``response_format``), the
        default is ``function_calling``: the tool travels on the request to every tier."""
        if kwargs:
            raise ValueError(f"unsupported arguments: {sorted(kwargs)}")
        if method is None:
            method = "function_calling" if self._text_only else "json_schema"
        if method not in ("function_calling", "json_schema", "json_mode"):
            raise ValueError(f"method must be function_calling, json_schema or json_mode, not {method!r}")
        if strict is not None and method == "json_mode":
            raise ValueError("Argument `strict` is not supported with `method`='json_mode'")
        is_model = isinstance(schema, type) and issubclass(schema, BaseModel)
        fmt = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        marker: dict[str, Any] = {_STRUCTURED: _Structured(method, schema)}
        parser: Runnable[Any, Any]
        if method == "function_calling":
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools(
                [schema],
                tool_choice="any",
                parallel_tool_calls=False,
                strict=strict,
                ls_structured_output_format=fmt,
                **marker,
            )
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if is_model
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
            return _with_parser(llm, parser, include_raw)
        parser = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()  # type: ignore[arg-type]
        extra: dict[str, Any] = {}
        if method == "json_schema":
            response_format = _response_format(schema, strict)
        else:  # tiers with no JSON mode (ChatAnthropic) get the schema, as their own json_mode does
            response_format = {"type": "json_object"}
            try:
                extra[_JSON_FALLBACK] = _response_format(schema, strict)
            except (ValueError, TypeError, KeyError):  # a schema JSON mode can take, json_schema cannot
                get_logger().debug("cascade.langchain.json_mode_no_schema_format")
            no_json_mode = [
                f"{t.name} ({type(t.provider.chat_model).__name__})"
                for t in self.cascade.tiers
                if isinstance(t.provider, LangChainProvider) and not has_json_mode(t.provider.chat_model)
            ]
            if no_json_mode:
                warnings.warn(
                    f"tiers {', '.join(no_json_mode)} have no JSON mode: they get method='json_schema' with"
                    " this schema instead (as their own with_structured_output(method='json_mode') does)",
                    UserWarning,
                    stacklevel=2,
                )
        llm = self.bind(response_format=response_format, ls_structured_output_format=fmt, **extra, **marker)
        return _with_parser(llm, parser, include_raw)

    def with_retry(
        self,
        *,
        retry_if_exception_type: tuple[type[BaseException], ...] | Callable[[BaseException], bool] = (
            Exception,
        ),
        wait_exponential_jitter: bool = True,
        exponential_jitter_params: Any = None,
        stop_after_attempt: int = 3,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """As ``Runnable.with_retry``, but an exception type also matches an error's ``__cause__``
        (``AllTiersFailedError`` caused by ``openai.InternalServerError`` retries on the latter)."""
        return RunnableRetry(
            bound=self,
            kwargs={},
            config={},
            retry_exception_types=retry_if_exception_type
            if callable(retry_if_exception_type)
            else _cause_matcher(retry_if_exception_type),
            wait_exponential_jitter=wait_exponential_jitter,
            exponential_jitter_params=exponential_jitter_params,
            max_attempt_number=stop_after_attempt,
        )

    # the returned message carries the whole run's usage; the run reported only its own share.
    # streaming paths call ``_stream`` without a run manager: hand it the run's id and config
    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        if self._lean() and not _wants_tokens(config):
            return self._lean_invoke(input, config, stop, kwargs)
        config = self._parent(config, kwargs)
        out = _total(super().invoke(input, config, stop=stop, **kwargs))
        assert isinstance(out, AIMessage)
        return out

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        if self._lean() and not _wants_tokens(config):
            return await self._lean_ainvoke(input, config, stop, kwargs)
        config = self._parent(config, kwargs)
        out = _total(await super().ainvoke(input, config, stop=stop, **kwargs))
        assert isinstance(out, AIMessage)
        return out

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        config = self._parent(config, kwargs)
        for chunk in super().stream(input, config, stop=stop, **kwargs):
            yield _as_chunk(chunk)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        config = self._parent(config, kwargs)
        async for chunk in super().astream(input, config, stop=stop, **kwargs):
            yield _as_chunk(chunk)

    def _parent(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> RunnableConfig | None:
        if _PARENT_KWARG in kwargs:
            return config
        config = ensure_config(config)
        run_id = config.get("run_id") or uuid.uuid4()
        config["run_id"] = run_id
        inner = RunnableConfig(**config)
        inner.pop("run_id", None)
        kwargs[_PARENT_KWARG] = _Parent(run_id, inner)
        return config

    # -- building the request -------------------------------------------------------------------

    def _prepare(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
        run_metadata: dict[str, Any] | None = None,
    ) -> _Scope:
        """The request and the tier runs' callbacks; ``run_metadata``: an unreported run's metadata."""
        parent: _Parent | None = kwargs.pop(_PARENT_KWARG, None)
        callbacks: BaseCallbackManager | None = None
        metadata: dict[str, Any] = run_metadata or {}
        if run_manager is not None:
            callbacks = _child_callbacks(run_manager, run_manager.run_id, self.callbacks, self.tags)
            metadata = run_manager.metadata
        elif parent is not None:
            cfg = parent.config
            run = CallbackManager.configure(
                cfg.get("callbacks"),
                self.callbacks,
                self.verbose,
                cfg.get("tags"),
                self.tags,
                {**(cfg.get("metadata") or {}), **(self.metadata or {})},
            )
            callbacks = _child_callbacks(run, parent.run_id, self.callbacks, self.tags)
            metadata = run.inheritable_metadata
        key = kwargs.get("budget_key")
        if key is None and self.budget_key_metadata:
            key = metadata.get(self.budget_key_metadata)
        tools = kwargs.get("tools")
        tool_dicts = tuple(convert_to_openai_tool(t) for t in tools) if tools else self.tools
        options = {k: v for k, v in kwargs.items() if k not in _NOT_OPTIONS}
        if self._text_only:
            asked = options
            if _STRUCTURED in kwargs:  # with_structured_output's own parallel_tool_calls=False: no news
                asked = {k: v for k, v in options.items() if k != "parallel_tool_calls"}
            self._check_text_only(messages, asked)
        if self._settings:  # checked at build: every tier takes them (from its params or per call)
            options = {**self._settings, **options}
        request = Request(
            from_langchain_messages(messages),
            tools=tool_dicts,
            metadata={k: v for k, v in metadata.items() if not k.startswith("ls_")} if metadata else {},
            budget_key=None if key is None else str(key),
            tool_choice=kwargs.get("tool_choice", self.tool_choice),
        )
        if not request.messages or not any(m.content.strip() or m.tool_calls for m in request.messages):
            request = Request.of(request.messages)  # raises the usual InvalidRequestError
        fallback = kwargs.get(_JSON_FALLBACK)
        unheard = run_metadata is not None
        return _Scope(
            callbacks,
            request,
            messages,
            self.cascade.name,
            stop,
            options,
            json_fallback=fallback,
            structured=kwargs.get(_STRUCTURED),
            unheard=unheard,
        )

    def _session(self, request: Request) -> str | None:
        """The session key for pinning, from the run's metadata (``session_metadata``)."""
        for key in self.session_metadata:
            value = request.metadata.get(key)
            if value is not None:
                return str(value)
        return None

    def _check_text_only(self, messages: Sequence[BaseMessage], options: Mapping[str, Any]) -> None:
        tiers = ", ".join(self._text_only)
        if _has_media(messages):
            raise InvalidRequestError(
                f"this request has image/audio/file content, which tiers {tiers} cannot take (text only);"
                " use LangChain chat models for tiers that must see it"
            )
        if options:
            warnings.warn(
                f"call options {sorted(options)} reach LangChain tiers only; tiers {tiers} ignore them"
                " (set them in the policy's params)",
                UserWarning,
                stacklevel=4,
            )

    # -- generation -------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        scope = self._prepare(messages, stop, run_manager, kwargs)
        with _in_scope(scope):
            result = self._answered(self._traced.run(scope.request, session=self._session(scope.request)))
        return ChatResult(generations=[ChatGeneration(message=_reported_message(result, scope))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        scope = self._prepare(messages, stop, run_manager, kwargs)
        with _in_scope(scope):
            result = self._answered(
                await self._traced.arun(scope.request, session=self._session(scope.request))
            )
        return ChatResult(generations=[ChatGeneration(message=_reported_message(result, scope))])

    def _answered(self, result: CascadeResult) -> CascadeResult:
        """``result``, or an abstention as the configured message (else raised as a typed error)."""
        if result.abstention is None:
            return result
        if self.abstain_message is None:
            raise AbstainedError(
                f"policy {result.policy!r} abstained: {result.abstention}", result.attempts, result.abstention
            )
        return replace(result, answer=self.abstain_message)

    def _live(self, action: Any) -> _TierRun | None:
        """The tier to stream live for ``action``, if any: the last tier, when its answer is final."""
        if not self.stream_final_tier or not isinstance(action, Call) or action.n != 1:
            return None
        key = action.tier.call_key
        if key and action.cache is not None and action.cache.bought(key, action.request) >= action.n:
            return None  # its model already answered in this run (a voter, a judge): reused, not re-bought
        settings = self._traced.settings
        last = settings.tiers[-1]
        if action.tier is not last or not isinstance(last.provider, _TierRun) or not last.provider.streams:
            return None
        if last.scorer is not None and (
            settings.on_exhausted != "return_last" or settings.on_unverified != "answer"
        ):
            return None
        return last.provider

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        scope = self._prepare(messages, stop, run_manager, kwargs)
        streamed: list[AIMessageChunk] = []

        def step(action: Action) -> Step[ChatGenerationChunk]:
            live = self._live(action)
            if live is not None:
                start = time.perf_counter()
                runs = _OpenRuns()
                chunks = live.stream(scope.request, scope, runs)
                try:
                    for chunk in chunks:
                        streamed.append(chunk)
                        yield ChatGenerationChunk(message=_public(chunk))
                except ProviderError as exc:
                    scope.tally.errors.append(exc)
                    if streamed:
                        raise
                except GeneratorExit:  # closed here: the tier's stream ends its run when closed
                    raise
                except BaseException as exc:  # interrupted inside the tier: its run ends with it
                    runs.end(exc, scope)
                    raise
                finally:
                    _close(chunks)  # abandoned: the tier's run ends (with an error) now
                if streamed:
                    yield Executed(_streamed_outcome(live, streamed, time.perf_counter() - start, scope))
                    return
            token = _scope.set(scope)
            try:
                outcome = execute(action)
            finally:
                _scope.reset(token)
            yield Executed(outcome)

        driver = self._traced.drive(scope.request, step, session=self._session(scope.request))  # watched
        result: CascadeResult | None = None
        try:
            for item in driver:
                if isinstance(item, CascadeResult):
                    result = item
                else:
                    yield item
        except AllTiersFailedError as exc:
            failed = _with_cause(exc, scope.tally)
            raise failed from failed.__cause__
        finally:
            driver.close()  # closed mid-answer: the driver settles the loop's hold first
            _release_held(scope)
        assert result is not None
        result = self._answered(result)
        yield ChatGenerationChunk(
            message=_final_chunk(result, bool(streamed), _list_content(streamed), scope)
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        scope = self._prepare(messages, stop, run_manager, kwargs)
        streamed: list[AIMessageChunk] = []

        async def step(action: Action) -> AsyncStep[ChatGenerationChunk]:
            live = self._live(action)
            if live is not None:
                start = time.perf_counter()
                runs = _OpenRuns()
                chunks = live.astream(scope.request, scope, runs)
                try:
                    async for chunk in chunks:
                        streamed.append(chunk)
                        yield ChatGenerationChunk(message=_public(chunk))
                except ProviderError as exc:
                    scope.tally.errors.append(exc)
                    if streamed:
                        raise
                except GeneratorExit:  # closed here: the tier's stream ends its run when closed
                    raise
                except BaseException as exc:  # cancelled inside the tier: its run ends with it
                    await runs.aend(exc, scope)
                    raise
                finally:
                    await _aclose(chunks)  # abandoned: the tier's run ends (with an error) now
                if streamed:
                    yield Executed(_streamed_outcome(live, streamed, time.perf_counter() - start, scope))
                    return
            token = _scope.set(scope)
            try:
                outcome = await aexecute(action)
            finally:
                _scope.reset(token)
            yield Executed(outcome)

        driver = self._traced.adrive(scope.request, step, session=self._session(scope.request))
        result: CascadeResult | None = None
        try:
            async for item in driver:
                if isinstance(item, CascadeResult):
                    result = item
                else:
                    yield item
        except AllTiersFailedError as exc:
            failed = _with_cause(exc, scope.tally)
            raise failed from failed.__cause__
        finally:
            await driver.aclose()  # closed mid-answer: the driver settles the hold off the event loop
            _release_held(scope)
        assert result is not None
        result = self._answered(result)
        yield ChatGenerationChunk(
            message=_final_chunk(result, bool(streamed), _list_content(streamed), scope)
        )


def _close(chunks: Iterator[AIMessageChunk]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


async def _aclose(chunks: AsyncIterator[AIMessageChunk]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


_SETTINGS = ("temperature", "max_tokens", "top_p", "seed")


def _with_params(policy: Any, settings: Mapping[str, Any]) -> Any:
    """``policy`` with ``settings`` in every tier's ``params`` (validated as the policy's are)."""
    from cascade.policy.schema import GenerationParams

    tiers = []
    for t in policy.tiers:
        try:
            params = GenerationParams.model_validate({**t.params.model_dump(exclude_unset=True), **settings})
        except ValueError as exc:
            raise ConfigurationError(f"tier {t.name!r}: {exc}") from exc
        tiers.append(t.model_copy(update={"params": params}))
    return policy.model_copy(update={"tiers": tuple(tiers) if isinstance(policy.tiers, tuple) else tiers})


def _check_settings(cascade: Cascade, settings: Mapping[str, Any]) -> None:
    """Refuse model settings a tier would not send: a LangChain model with no such field, or a
    provider whose policy ``params`` say otherwise (set them there, or use ``from_policy``)."""
    from cascade.providers.langchain import _constructor_names

    for t in cascade.tiers:
        provider = t.provider
        if isinstance(provider, LangChainProvider):
            names = _constructor_names(type(provider.chat_model))
            missing = [k for k in settings if k not in names]
            if missing:
                raise ConfigurationError(
                    f"tier {t.name!r} ({type(provider.chat_model).__name__}) takes no {', '.join(missing)}"
                )
            continue
        params = getattr(provider, "params", None)
        differ = [k for k, v in settings.items() if getattr(params, k, None) != v]
        if differ:
            raise ConfigurationError(
                f"tier {t.name!r} ({t.provider_kind or type(provider).__name__}) sends its policy params,"
                f" not {', '.join(f'{k}={settings[k]!r}' for k in differ)}: pass them to"
                " CascadeChatModel.from_policy(...) or set them in the tier's params"
            )


def _from_policy(cls: type[CascadeChatModel], *, model: str, **kwargs: Any) -> CascadeChatModel:
    return cls.from_policy(model, **kwargs)


def register_init_chat_model() -> None:
    """Let ``init_chat_model("cascade:policy.yaml", providers=...)`` build a :class:`CascadeChatModel`.

    LangChain's ``init_chat_model`` knows a fixed list of providers; this adds ``cascade`` to it
    (the policy path is the model name; other arguments go to :meth:`CascadeChatModel.from_policy`).
    It edits LangChain's provider table, so it is opt-in.
    """
    try:
        from langchain.chat_models import base
    except ImportError as exc:
        raise ConfigurationError("init_chat_model needs the `langchain` package") from exc
    registry = getattr(base, "_BUILTIN_PROVIDERS", None)
    if not isinstance(registry, dict):
        raise ConfigurationError("this LangChain version has no provider table for init_chat_model")
    registry["cascade"] = ("cascade.langchain", "CascadeChatModel", _from_policy)
