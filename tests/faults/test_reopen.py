"""A cascade closed (``aclose`` or ``close``) and used again reopens its clients (issue 11 follow-up)."""

from __future__ import annotations

import pytest

from cascade import Cascade
from cascade.engine.actions import Tier
from tests.faults.conftest import PRICE, RETRY, provider
from tests.faults.fault_server import FaultServer


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_run_after_aclose_reopens_the_sync_client(server: FaultServer, kind: str) -> None:
    c = Cascade([Tier("only", provider(server, kind, clean=True), PRICE, retry=RETRY)])
    assert (await c.arun("q")).answer
    await c.aclose()  # closed the sync clients too: run() raised "client has been closed"
    assert c.run("q").answer
    assert (await c.arun("q")).answer
    c.close()
    assert c.run("q").answer
    await c.aclose()
