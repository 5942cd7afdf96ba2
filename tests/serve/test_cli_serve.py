"""``cascade serve``: the command starts uvicorn; ``--demo`` answers the recorded prompts offline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cascade.cli import main
from cascade.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cascade serve exited: {proc.communicate()[1]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("cascade serve did not become ready")


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "cascade"),  # the installed command
        "serve",
        "--demo",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}  # offline: no provider key
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_the_demo_answers_a_recorded_prompt_offline(demo: str) -> None:
    body = {
        "model": "cascade/gsm8k-demo",
        "messages": [{"role": "user", "content": "How much profit did Josh make?"}],
        "metadata": {"id": "gsm8k-main-test-#2"},
    }
    r = httpx.post(f"{demo}/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["x-cascade-tier"] == "sonnet"
    assert '"answer": "70000"' in r.json()["choices"][0]["message"]["content"]
    assert [m["id"] for m in httpx.get(f"{demo}/v1/models").json()["data"]] == ["cascade/gsm8k-demo"]


def test_the_demo_says_why_it_cannot_answer_another_prompt(demo: str) -> None:
    body = {"model": "cascade/gsm8k-demo", "messages": [{"role": "user", "content": "What is 2+2?"}]}
    r = httpx.post(f"{demo}/v1/chat/completions", json=body)
    assert r.status_code == 502 and "replay answers only recorded prompts" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve"], "give a policy file or directory, or --demo"),
        (["serve", "policies/demo.yaml", "--demo"], "not both"),
        (["serve", "--demo", "--workers", "0"], "--workers"),
        (["serve", "no/such.yaml"], "no such policy file"),
    ],
)
def test_bad_arguments_are_one_line_before_any_port_is_bound(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_directory_serves_each_policy_as_a_model(tmp_path: Path) -> None:
    from cascade.serve import models

    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(
            (ROOT / "policies" / "demo.yaml").read_text().replace("name: demo", f"name: {name}")
        )
    served = models.load(tmp_path)
    assert sorted(served) == ["cascade/a", "cascade/b"]
    (tmp_path / "c.yaml").write_text(
        (ROOT / "policies" / "demo.yaml").read_text().replace("name: demo", "name: a")
    )
    with pytest.raises(Exception, match="also the name"):
        models.load(tmp_path)


def test_keys_come_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cascade.cli.serve import gateway
    from cascade.serve.models import DEMO

    keys = tmp_path / "keys.yaml"
    keys.write_text("acme: sk-file\n")
    monkeypatch.setenv("CASCADE_SERVE_KEYS", "globex: sk-env\n")
    from_file = gateway({"policy": str(DEMO), "keys": str(keys)}).keys
    from_env = gateway({"policy": str(DEMO)}).keys
    assert from_file.tenant("Bearer sk-file") == "acme" and from_env.tenant("Bearer sk-env") == "globex"
    monkeypatch.setenv("CASCADE_SERVE_KEYS", "acme: [sk-secret, sk-secret]")
    with pytest.raises(ConfigurationError, match=r"\$CASCADE_SERVE_KEYS") as err:
        gateway({"policy": str(DEMO)})
    assert "sk-secret" not in str(err.value)


def test_abstain_as_reaches_the_gateway() -> None:
    import argparse

    from cascade.cli.serve import add_arguments, gateway, settings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert gateway(settings(parser.parse_args(["--demo"]))).abstain_as == "answer"
    assert gateway(settings(parser.parse_args(["--demo", "--abstain-as", "error"]))).abstain_as == "error"
