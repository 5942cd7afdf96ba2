"""Third-party providers and scorers: registered at run time or through entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from cascade import PolicyError, registry
from cascade.policy import loads
from cascade.testing import ScriptedProvider


class EchoProvider(ScriptedProvider):
    """A third-party provider: echoes the prompt, shouting if asked."""

    class Options(BaseModel):  # type: ignore[assignment]
        model_config = ConfigDict(extra="forbid")
        shout: bool = False

    @classmethod
    def from_config(cls, tier: Any, options: Any, ctx: Any) -> EchoProvider:  # type: ignore[override]
        return cls(
            lambda request, n: request.prompt.upper() if options.shout else request.prompt, model=tier.model
        )


POLICY = """\
name: echo
tiers:
  - name: only
    provider: echo
    model: e1
    options: {shout: true}
"""


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> registry.Registry:
    reg = registry.Registry("cascade.providers", dict(registry.PROVIDERS._paths))
    monkeypatch.setattr(registry, "PROVIDERS", reg)
    monkeypatch.setattr("cascade.policy.schema.PROVIDERS", reg)
    monkeypatch.setattr("cascade.policy.loader.PROVIDERS", reg)
    monkeypatch.setattr("cascade.engine.build.PROVIDERS", reg)
    return reg


def test_runtime_registration(fresh_registry: registry.Registry) -> None:
    import cascade

    with pytest.raises(PolicyError, match="unknown provider 'echo'"):
        loads(POLICY)
    fresh_registry.register("echo", EchoProvider)
    policy = loads(POLICY)
    assert cascade.Cascade.from_policy(policy).run("hello").answer == "HELLO"


def test_entry_point_registration(fresh_registry: registry.Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="echo", value="tests.test_registry:EchoProvider", group="cascade.providers")

    def fake_entry_points(group: str) -> list[EntryPoint]:
        return [ep] if group == "cascade.providers" else []

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    fresh_registry._scanned = False
    policy = loads(POLICY)
    assert policy.tiers[0].provider == "echo"
    assert fresh_registry.get("echo") is EchoProvider


def test_unknown_name_error_suggests() -> None:
    with pytest.raises(KeyError, match="did you mean 'replay'"):
        registry.PROVIDERS.get("replya")
