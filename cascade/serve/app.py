"""The gateway's ASGI app (Starlette): OpenAI's chat-completions API in front of served cascades.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models`` (and ``/v1/models/{id}``), ``/healthz``,
``/readyz``, ``/metrics``. Bodies are shaped by :mod:`cascade.serve.wire`, errors by
:mod:`cascade.serve.errors`, keys checked by :mod:`cascade.serve.keys`.

A streamed answer is sent once the cascade has chosen it (a candidate a scorer may reject is never
shown): the run goes on while the gateway watches the connection, and a client that disconnects
cancels it; the engine then settles the run's open hold before the cancellation ends. Errors
found before the answer (a cap's refusal, every tier failing) keep their status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import Token
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from cascade.engine import Cascade
from cascade.errors import CascadeError
from cascade.logging import get_logger, listening
from cascade.serve import wire
from cascade.serve.errors import ApiError, abstained, deadline, from_cascade
from cascade.serve.keys import Keys
from cascade.serve.reload import Reloader
from cascade.types import CascadeResult, show

MAX_BODY_BYTES = 4 * 1024 * 1024
"""The default request-body limit (4 MiB): larger bodies get a 400 before they are read."""
AbstainAs = Literal["answer", "error"]
"""How an abstention (``on_unverified: abstain``) is sent: ``answer``, a 200 with empty content,
``finish_reason: stop``, the body's ``cascade`` field ``{"abstained": true, "abstention": why}``
and the header ``x-cascade-abstained: true``; ``error``, a 422 (code ``abstained``), which the
OpenAI SDKs raise as ``UnprocessableEntityError`` and do not retry."""


class Gateway:
    """Serves ``models`` (model id -> :class:`~cascade.Cascade`) over OpenAI's API.

    ``keys``: API keys and their tenants (None: no key needed, no tenant). ``deadline``: seconds a
    request may take before it is cancelled with a 504 (None: no deadline). ``abstain_as``: how an
    abstention is sent (:data:`AbstainAs`).
    """

    def __init__(
        self,
        models: Mapping[str, Cascade],
        *,
        keys: Keys | None = None,
        max_body: int = MAX_BODY_BYTES,
        deadline: float | None = None,
        source: str | os.PathLike[str] | None = None,
        reload_interval: float | None = 2.0,
        versions: Mapping[str, str] | None = None,
        abstain_as: AbstainAs = "answer",
    ) -> None:
        self.models: dict[str, Cascade] = {}
        self.abstain_as = abstain_as
        self.versions: dict[str, str] = {}
        self.keys = keys
        self.max_body = max_body
        self.deadline = deadline
        self.created = int(time.time())
        self.active: Counter[int] = Counter()  # requests in flight per cascade (id)
        self.retired: dict[int, Cascade] = {}  # replaced by a reload, closed once idle
        self._closing: set[asyncio.Task[None]] = set()
        self.reloader = None if source is None else Reloader(source, self.swap, reload_interval)
        self.swap(models, versions)

    def swap(self, models: Mapping[str, Cascade], versions: Mapping[str, str] | None = None) -> None:
        """Serve ``models`` (at ``versions``: model -> policy version) from now on; the replaced
        cascades close when their requests are done."""
        for cascade in models.values():
            _with_metrics(cascade)
        old, self.models = self.models, dict(models)
        self.versions = dict(versions or {})
        for cascade in old.values():
            self.retired[id(cascade)] = cascade
            self._close_if_idle(cascade)

    def _close_if_idle(self, cascade: Cascade) -> None:
        if self.active[id(cascade)] or self.retired.pop(id(cascade), None) is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(cascade.aclose())
        except RuntimeError:  # no loop (swapped before serving): close the sync clients
            cascade.close()
            return
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def app(self) -> Starlette:
        routes = [
            Route("/v1/chat/completions", _api(self.chat), methods=["POST"]),
            Route("/v1/models", _api(self.list_models), methods=["GET"]),
            Route("/v1/models/{model:path}", _api(self.get_model), methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]
        handlers: Mapping[Any, Callable[..., Any]] = {HTTPException: _http_error, Exception: _crash}
        app = Starlette(routes=routes, exception_handlers=handlers, lifespan=self._lifespan)
        app.state.gateway = self
        return app

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.reloader is None:
            yield
        else:
            async with self.reloader.running():
                yield
        await self.aclose()

    async def aclose(self) -> None:
        for cascade in [*self.models.values(), *self.retired.values()]:
            await cascade.aclose()

    # -- endpoints ----------------------------------------------------------------------------------

    async def chat(self, request: HttpRequest) -> Response:
        tenant = self._tenant(request)
        call = wire.parse(await _json(request, self.max_body), budget_key=tenant)
        cascade = self._model(call.model)
        cid = wire.completion_id()
        session = request.headers.get("x-cascade-session") or None
        version = self.versions.get(call.model)
        run = self.answer(self.run(cascade, call, session), cid, version)
        if call.stream:
            return _Stream(run, call, cid, version)
        result = await run
        with_trace = request.headers.get("x-cascade-trace", "").lower() in ("1", "true")
        body = wire.completion(result, call.model, cid, with_trace=with_trace)
        return JSONResponse(body, headers=facts(result, cid, version))

    async def list_models(self, request: HttpRequest) -> Response:
        self._tenant(request)
        return JSONResponse({"object": "list", "data": [self._card(m) for m in self.models]})

    async def get_model(self, request: HttpRequest) -> Response:
        self._tenant(request)
        model = request.path_params["model"]
        self._model(model)
        return JSONResponse(self._card(model))

    async def healthz(self, request: HttpRequest) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: HttpRequest) -> Response:
        models = {m: self.versions.get(m) for m in sorted(self.models)}
        return JSONResponse({"status": "ready", "models": models})

    async def metrics(self, request: HttpRequest) -> Response:
        try:
            from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
        except ImportError:  # pragma: no cover - the serve extra installs it
            return _error(ApiError(404, "metrics need prometheus-client", "not_found_error"))
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    # -- the run ----------------------------------------------------------------------------------

    async def run(self, cascade: Cascade, call: wire.ChatCall, session: str | None = None) -> CascadeResult:
        """Run ``call`` on ``cascade`` within the deadline; cascade errors become :class:`ApiError`."""
        token = _response_format(cascade, call.response_format)
        self.active[id(cascade)] += 1
        try:
            async with asyncio.timeout(self.deadline):
                return await cascade.arun(call.request, session=session)
        except TimeoutError:
            raise deadline(self.deadline or 0) from None
        except CascadeError as exc:
            raise from_cascade(exc) from exc
        finally:
            self.active[id(cascade)] -= 1
            if not self.active[id(cascade)]:
                del self.active[id(cascade)]
                if id(cascade) in self.retired:
                    self._close_if_idle(cascade)
            if token is not None:
                from cascade.providers.langchain import tier_call

                tier_call.reset(token)

    async def answer(self, run: Awaitable[CascadeResult], cid: str, version: str | None) -> CascadeResult:
        """``run``'s result; an abstention is an :class:`ApiError` (422) when ``abstain_as`` is error."""
        result = await run
        if result.abstained and self.abstain_as == "error":
            raise abstained(result.abstention or "", facts(result, cid, version))
        return result

    def _tenant(self, request: HttpRequest) -> str | None:
        return None if self.keys is None else self.keys.tenant(request.headers.get("authorization"))

    def _model(self, model: str) -> Cascade:
        cascade = self.models.get(model)
        if cascade is None:
            raise ApiError(
                404,
                f"The model `{model}` does not exist; served: {', '.join(sorted(self.models))}",
                param="model",
                code="model_not_found",
            )
        return cascade

    def _card(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": self.created, "owned_by": "cascade"}


def facts(result: CascadeResult, cid: str, version: str | None = None) -> dict[str, str]:
    """The cascade's facts about a result, as response headers (``version``: the policy's)."""
    headers = {
        "x-request-id": cid,
        "x-cascade-tier": result.tier,
        "x-cascade-model": result.model,
        "x-cascade-accepted": "true" if result.accepted else "false",
        "x-cascade-cost-usd": show(result.cost),
    }
    if version is not None:
        headers["x-cascade-policy-version"] = version
    if result.abstained:
        headers["x-cascade-abstained"] = "true"
    return headers


def _response_format(cascade: Cascade, fmt: Mapping[str, Any] | None) -> Token[Any] | None:
    """Pass ``response_format`` to the cascade's LangChain tiers the way the LangChain front does
    (call options on :data:`cascade.providers.langchain.tier_call`); ``openai`` and
    ``openai_compatible`` tiers send the request's own; tiers of other kinds take only what their
    policy sets, and a warning says so."""
    if fmt is None:
        return None
    from cascade.providers.langchain import CallContext, LangChainProvider, tier_call
    from cascade.providers.openai import OpenAIProvider

    langchain = [t for t in cascade.tiers if isinstance(t.provider, LangChainProvider)]
    others = [t.name for t in cascade.tiers if not isinstance(t.provider, LangChainProvider | OpenAIProvider)]
    if others:
        get_logger().warning("cascade.serve.response_format_ignored", policy=cascade.name, tiers=others)
    if not langchain:
        return None
    return tier_call.set(CallContext(options={"response_format": dict(fmt)}))


def _with_metrics(cascade: Cascade) -> None:
    """Served cascades record Prometheus metrics (when prometheus-client is installed)."""
    try:
        from cascade.observe import Observer, PrometheusMetrics

        metrics = PrometheusMetrics()
    except CascadeError:  # pragma: no cover - no prometheus-client
        return
    if cascade.observer is None:
        cascade.observer = Observer(metrics=metrics)
    elif cascade.observer.metrics is None:
        cascade.observer.metrics = metrics


# -- request and response plumbing ------------------------------------------------------------------


async def _json(request: HttpRequest, limit: int) -> Any:
    """The body as JSON, refused (400) past ``limit`` bytes before it is all read."""
    too_large = ApiError(
        400, f"the request body is larger than the gateway's limit ({limit} bytes)", code="request_too_large"
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise too_large
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise ApiError(
            400, "We could not parse the JSON body of your request: it is not valid JSON", code="invalid_json"
        ) from None


def _error(err: ApiError) -> Response:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _api(
    handler: Callable[[HttpRequest], Awaitable[Response]],
) -> Callable[[HttpRequest], Awaitable[Response]]:
    """``handler`` with :class:`ApiError` answered in OpenAI's shape, and one event per request."""

    async def endpoint(request: HttpRequest) -> Response:
        start = time.perf_counter()
        try:
            response = await handler(request)
        except ApiError as err:
            response = _error(err)
        if isinstance(response, _Stream):  # it knows its status when it is sent: it logs then
            response.path, response.start = request.url.path, start
        else:
            _log_request(request.url.path, response.status_code, response.headers, start)
        return response

    return endpoint


def _log_request(path: str, status: int, headers: Mapping[str, str], start: float) -> None:
    """The one event per request: status, the answering tier and cost, latency (no key, no text)."""
    log = listening()
    if log is not None:
        log.info(
            "cascade.serve.request",
            path=path,
            status=status,
            tier=headers.get("x-cascade-tier"),
            cost=headers.get("x-cascade-cost-usd"),
            latency_ms=round((time.perf_counter() - start) * 1000, 3),
        )


async def _http_error(request: HttpRequest, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return _error(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", kind))


async def _crash(request: HttpRequest, exc: Exception) -> Response:
    get_logger().error("cascade.serve.crash", path=request.url.path, error=type(exc).__name__)
    return _error(ApiError(500, "internal error in the gateway", "server_error", code="internal_error"))


class _Stream(Response):
    """An SSE answer, sent once the run is done; a client that disconnects first cancels the run."""

    def __init__(
        self, run: Awaitable[CascadeResult], call: wire.ChatCall, cid: str, version: str | None = None
    ) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self.run = run
        self.version = version
        self.call = call
        self.cid = cid
        self.path = ""
        self.start = time.perf_counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        me = asyncio.current_task()
        assert me is not None
        finished = gone = False

        async def watch() -> None:  # the client went away: cancel the run (its hold settles first)
            nonlocal gone
            await _disconnect(receive)
            if not finished:
                gone = True
                me.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            result = await self.run
        except asyncio.CancelledError:
            if not gone:
                raise
            me.uncancel()
            get_logger().info("cascade.serve.client_gone", model=self.call.model, request_id=self.cid)
            _log_request(self.path, 499, {}, self.start)  # 499: the client closed the request
            return
        except ApiError as err:
            await _error(err)(scope, receive, send)
            _log_request(self.path, err.status, {}, self.start)
            return
        finally:
            finished = True
            watcher.cancel()
        headers = {
            **facts(result, self.cid, self.version),
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )
        events = [
            wire.sse(c) for c in wire.chunks(result, self.call.model, self.cid, self.call.include_usage)
        ]
        # the answer is whole: its events leave in one write (half the server's time per stream)
        await send({"type": "http.response.body", "body": b"".join(events) + wire.sse("[DONE]")})
        _log_request(self.path, 200, headers, self.start)


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


__all__ = ["MAX_BODY_BYTES", "AbstainAs", "Gateway", "facts"]
