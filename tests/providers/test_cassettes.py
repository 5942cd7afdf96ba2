"""Every cassette is free of anything that looks like a credential, and replays offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.providers.conftest import CASSETTES, REQUEST_HEADERS

FILES = sorted(CASSETTES.rglob("*.yaml"))

SECRETS = {
    "OpenAI key": re.compile(r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{16,}"),
    "Anthropic key": re.compile(r"sk-ant-[A-Za-z0-9_-]{8,}"),
    "bearer token": re.compile(r"bearer\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE),
    "AWS key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "Google key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "test key": re.compile(r"test-(?:openai|anthropic)-key"),
}
SENSITIVE_HEADERS = {
    *REQUEST_HEADERS,
    "proxy-authorization",
    "x-goog-api-key",
    "api-key",
    "set-cookie",
    "openai-organization",
    "anthropic-organization-id",
}


def test_there_are_cassettes() -> None:
    assert len(FILES) >= 30, f"expected the recorded cassettes under {CASSETTES}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CASSETTES)))
def test_no_credentials(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for what, pattern in SECRETS.items():
        match = pattern.search(text)
        assert match is None, f"{path.name}: looks like a {what}: {match.group(0)[:12]}..."
    data = yaml.safe_load(text)
    for interaction in data["interactions"]:
        for part in ("request", "response"):
            headers = {h.lower() for h in interaction[part].get("headers", {})}
            leaked = headers & SENSITIVE_HEADERS
            assert not leaked, f"{path.name}: {part} header(s) {sorted(leaked)} must be filtered"
        uri = interaction["request"]["uri"]
        assert not re.search(r"[?&](?:key|api_key|token|access_token)=", uri), (
            f"{path.name}: key in URL {uri}"
        )
        assert uri.startswith(
            ("https://api.openai.com/", "https://api.anthropic.com/", "http://localhost:8000/")
        )


def test_the_scan_catches_a_leak(tmp_path: Path) -> None:
    leaked = "headers: {authorization: [Bearer sk-proj-abcdefghijklmnopqrstuvwx]}"
    assert SECRETS["OpenAI key"].search(leaked) and SECRETS["bearer token"].search(leaked)
    assert SECRETS["Anthropic key"].search("x-api-key: sk-ant-api03-abcdefghijkl")
