"""A real uvicorn server for gateway tests: the app on a free loopback port, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Self

import openai
import uvicorn

from cascade import Budget, Cap, Cascade, Price, RetryPolicy, Tier
from cascade.serve import Gateway, Keys
from cascade.testing import FixedScorer, ScriptedProvider

PRICE = Price(Decimal(1), Decimal(1))  # $1 per million tokens: 10 in + 10 out cost $0.00002
NO_WAIT = RetryPolicy(attempts=1, initial=0, max_wait=0, jitter=0)
KEY = "sk-test-acme"
OTHER_KEY = "sk-test-globex"


def scripted(name: str, provider: Any, score: float | None = None, threshold: float | None = None) -> Tier:
    scorer = FixedScorer(score) if score is not None else None
    return Tier(name, provider, PRICE, scorer, threshold, NO_WAIT, provider_kind="scripted")


def two_tiers(
    cheap: Any = "cheap answer", strong: Any = "strong answer", score: float = 0.9, **kw: Any
) -> Cascade:
    """cheap (accepted when ``score`` >= 0.5), then strong."""
    return Cascade(
        [
            scripted("cheap", ScriptedProvider(cheap, model="cheap-model"), score, 0.5),
            scripted("strong", ScriptedProvider(strong, model="strong-model")),
        ],
        name="faq",
        **kw,
    )


def capped(limit: str = "0.00003") -> Cascade:
    """One tier ($0.00002 a call) under a per-key daily cap of ``limit``."""
    budget = Budget(caps=(Cap(Decimal(limit), "day", "key"),))
    return Cascade([scripted("only", ScriptedProvider("ok", model="m"))], name="capped", budget=budget)


class Server:
    """``with Server(gateway) as s: ... s.url`` — uvicorn serving ``gateway`` on a free port."""

    def __init__(self, gateway: Gateway) -> None:
        self.server = uvicorn.Server(uvicorn.Config(gateway.app(), log_level="warning", lifespan="on"))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.clients: list[openai.OpenAI] = []

    def client(self, key: str = KEY) -> openai.OpenAI:
        """An ``openai`` client of this server (closed with it), no retries."""
        self.clients.append(openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0))
        return self.clients[-1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        for c in self.clients:
            c.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def serve(models: Mapping[str, Cascade], keys: bool = True, **kw: Any) -> Server:
    tenants = {"acme": KEY, "globex": OTHER_KEY} if keys else None
    return Server(Gateway(models, keys=Keys(tenants) if tenants else None, **kw))
