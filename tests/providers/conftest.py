"""Cassette fixtures for the provider tests.

``CASCADE_RECORD`` picks the mode (see ``cassettes/README.md``):

* unset / ``replay`` (CI): cassettes are replayed, record mode ``none``, no network. The clients
  point at the real API hosts; vcrpy answers for them.
* ``local``: a :class:`WireServer` is started and every cassette is re-recorded against it; the
  recorded URLs are rewritten to the real API hosts so replay looks the same either way.
* ``real``: re-record against api.openai.com / api.anthropic.com with ``OPENAI_API_KEY`` and
  ``ANTHROPIC_API_KEY`` from the environment. Tests that need the wire server's scripted
  behaviour (errors on demand, fixed answers) are skipped and keep their cassettes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import vcr
import vcr.cassette

from tests.providers.wire_server import WireServer

ROOT = Path(__file__).resolve().parents[2]
CASSETTES = ROOT / "cassettes"
MODE = os.environ.get("CASCADE_RECORD", "replay")
if MODE not in ("replay", "local", "real"):
    raise pytest.UsageError(f"CASCADE_RECORD must be replay, local or real (got {MODE!r})")

HOSTS = {
    "/openai/": "https://api.openai.com/",
    "/anthropic/": "https://api.anthropic.com/",
    "/compat/": "http://localhost:8000/",  # stands for a local vLLM / Ollama / llama.cpp server
}
REQUEST_HEADERS = ["authorization", "x-api-key", "openai-organization", "openai-project", "cookie", "host"]
RESPONSE_HEADERS = ("set-cookie", "openai-organization", "openai-project", "anthropic-organization-id")


def _canonical_host(request: Any) -> Any:
    """Record a wire-server URL as the real API URL it stands for."""
    for prefix, real in HOSTS.items():
        marker = f"127.0.0.1:{request.port}{prefix}" if request.host == "127.0.0.1" else None
        if marker and marker in request.uri:
            request.uri = real + request.uri.split(marker, 1)[1]
            return request
    return request


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    headers = response.get("headers", {})
    for name in list(headers):
        if name.lower() in RESPONSE_HEADERS:
            del headers[name]
    return response


RECORDER = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="none" if MODE == "replay" else "all",
    match_on=["method", "scheme", "host", "port", "path", "query", "body"],
    filter_headers=REQUEST_HEADERS,
    decode_compressed_response=True,
    before_record_request=_canonical_host,
    before_record_response=_scrub_response,
)


@dataclass(frozen=True)
class Endpoints:
    """Where the provider under test sends requests (None: the SDK's default, the real API)."""

    openai: str | None
    anthropic: str | None
    compat: str
    mode: str


@pytest.fixture(scope="session")
def wire() -> Iterator[WireServer]:
    """A live wire server (always available: the timeout tests use it directly)."""
    server = WireServer().start()
    yield server
    server.stop()


@pytest.fixture
def endpoints(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Endpoints:
    if MODE == "real":
        if request.node.get_closest_marker("wire_only"):
            pytest.skip("needs the wire server's scripted behaviour; its cassette is kept")
        return Endpoints(None, None, "http://localhost:8000/v1", MODE)
    monkeypatch.setenv("OPENAI_API_KEY", "test-openai-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic-key")
    if MODE == "local":
        server: WireServer = request.getfixturevalue("wire")
        server.seen.clear()  # each test starts from a fresh script
        return Endpoints(
            f"{server.url}/openai/v1", f"{server.url}/anthropic", f"{server.url}/compat/v1", MODE
        )
    return Endpoints(None, None, "http://localhost:8000/v1", MODE)


@pytest.fixture(autouse=True)
async def _close_providers() -> Any:
    """Close every SDK client a test opened (sockets to the wire server, async transports)."""
    from tests.providers import helpers

    yield
    while helpers.OPEN:
        provider = helpers.OPEN.pop()
        await provider.aclose()
        provider.close()


def made(cass: Any) -> int:
    """How many requests the test has made so far (replayed or recorded)."""
    return int(cass.play_count) if MODE == "replay" else len(cass.requests)


_play_lock = threading.Lock()


@pytest.fixture
def cassette(
    request: pytest.FixtureRequest, endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> Iterator[vcr.cassette.Cassette]:
    """Replay (or record) ``cassettes/<module>/<test>.yaml`` around the test."""
    original = vcr.cassette.Cassette.play_response

    def locked(self: Any, req: Any) -> Any:  # parallel sampling threads share one cassette
        with _play_lock:
            return original(self, req)

    monkeypatch.setattr(vcr.cassette.Cassette, "play_response", locked)
    module = request.node.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "_")
    path = CASSETTES / module / f"{name}.yaml"
    if MODE != "replay":
        path.unlink(missing_ok=True)  # record afresh (record mode "all" would append)
    with RECORDER.use_cassette(str(path)) as cass:
        yield cass


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "wire_only: needs the local wire server's scripted behaviour")
    missing = [k for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY") if not os.environ.get(k)]
    if MODE == "real" and missing:  # before any cassette is deleted for re-recording
        raise pytest.UsageError(f"CASCADE_RECORD=real needs {' and '.join(missing)} in the environment")
