"""Hot reload: policy files reload on change or SIGHUP; a broken edit keeps the old policy."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from cascade.serve import Gateway
from cascade.serve import models as served
from tests.serve.support import Server
from tests.serve.test_cli_serve import free_port, wait_ready


def policy(answer: str, latency: float = 0.0) -> str:
    options = f"{{answers: [{answer}], latency: {latency}}}"
    return (
        "name: live\ntiers:\n"
        f"  - {{name: only, provider: scripted, model: m, price: {{input: 1, output: 1}}, options: {options}}}\n"
    )


def ask(url: str) -> str:
    body = {"model": "cascade/live", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["message"]["content"])


def answers_during_restart(url: str) -> set[str]:
    """Six answers; a connection a retiring worker closed unanswered counts as none (clients retry it)."""
    try:
        return {ask(url) for _ in range(6)}
    except httpx.TransportError:
        return set()


def eventually(check: Callable[[], bool], within: float = 30.0) -> bool:
    """Poll until ``check`` holds: a long cap, as a loaded machine may take seconds (a pass is quick)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def edit(path: Path, text: str) -> None:
    """Write ``text`` atomically with a new mtime (a rename, as editors and config tools do)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_an_edited_policy_is_served_and_a_broken_edit_keeps_the_old_one_with_one_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "live.yaml"
    path.write_text(policy("one"))
    loaded, versions = served.load_versions(path)
    gateway = Gateway(loaded, versions=versions, source=path, reload_interval=0.05)
    with Server(gateway) as s, capture_logs() as logs:
        assert ask(s.url) == "one"
        edit(path, policy("two"))
        assert eventually(lambda: ask(s.url) == "two")
        two = hashlib.sha256(policy("two").encode()).hexdigest()[:12]
        assert httpx.get(f"{s.url}/readyz").json()["models"] == {"cascade/live": two}
        body = {"model": "cascade/live", "messages": [{"role": "user", "content": "hi"}]}
        assert (
            httpx.post(f"{s.url}/v1/chat/completions", json=body).headers["x-cascade-policy-version"] == two
        )
        edit(path, policy("two").replace("tiers:", "tiers: [oops"))
        assert eventually(lambda: any(e["event"] == "cascade.serve.reload_failed" for e in logs))
        time.sleep(0.3)  # several more polls of the unchanged broken file
        assert ask(s.url) == "two"
        edit(path, policy("three"))
        assert eventually(lambda: ask(s.url) == "three")
    failed = [e for e in logs if e["event"] == "cascade.serve.reload_failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error" and str(path) in failed[0]["error"]
    assert [e["why"] for e in logs if e["event"] == "cascade.serve.reloaded"] == ["changed", "changed"]


def test_a_request_in_flight_finishes_on_the_policy_it_started_with(tmp_path: Path) -> None:
    path = tmp_path / "live.yaml"
    path.write_text(policy("old", latency=0.5))
    gateway = Gateway(served.load(path), source=path, reload_interval=None)
    old = gateway.models["cascade/live"]
    answers: list[str] = []
    with Server(gateway) as s:
        slow = threading.Thread(target=lambda: answers.append(ask(s.url)))
        slow.start()
        assert eventually(lambda: bool(gateway.active))
        edit(path, policy("new"))
        gateway.swap(served.load(path))
        assert ask(s.url) == "new"
        assert id(old) in gateway.retired  # still answering: not closed
        slow.join(30)
        assert eventually(lambda: not gateway.retired)  # closed once its request was done
    assert answers == ["old"]


def test_sighup_reloads_the_policy_of_a_running_cascade_serve(tmp_path: Path) -> None:
    path = tmp_path / "live.yaml"
    path.write_text(policy("before"))
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "cascade"), "serve", str(path), "--port", str(port)]
    cmd += ["--reload-interval", "0", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        edit(path, policy("after"))
        time.sleep(0.3)
        assert ask(url) == "before"  # no polling: nothing changes until SIGHUP
        proc.send_signal(signal.SIGHUP)
        assert eventually(lambda: ask(url) == "after")
        edit(path, "name: [broken")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert ask(url) == "after"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert err.count('"cascade.serve.reload_failed"') == 1 and "sk-" not in err


def test_sigterm_lets_a_request_in_flight_finish_and_settle_its_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cascade.cli import main

    path = tmp_path / "live.yaml"
    ledger = tmp_path / "ledger.db"
    path.write_text(
        policy("done", latency=2.0)
        + f"budget:\n  caps: [{{limit: 1, window: day}}]\n  ledger: {{kind: sqlite, path: {ledger}}}\n"
    )
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "cascade"), "serve", str(path), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    answers: list[str] = []

    def caps() -> dict[str, str]:
        assert main(["spend", "--policy", str(path), "--json"]) == 0
        (cap,) = json.loads(capsys.readouterr().out)["caps"]
        return dict(cap)

    try:
        wait_ready(url, proc)
        slow = threading.Thread(target=lambda: answers.append(ask(url)))
        slow.start()
        assert eventually(lambda: Decimal(caps()["held"]) > 0)  # the request is in flight, its hold taken
        proc.send_signal(signal.SIGTERM)
        slow.join(30)
        assert proc.wait(10) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it is done
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    assert answers == ["done"]
    cap = caps()
    assert Decimal(cap["spent"]) > 0 and Decimal(cap["held"]) == 0


@pytest.mark.slow
def test_with_workers_sighup_replaces_them_and_a_broken_edit_keeps_the_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "live.yaml"
    path.write_text(policy("first"))
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "cascade"),
        "serve",
        str(path),
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(
        [*cmd, "--reload-interval", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        assert {ask(url) for _ in range(6)} == {"first"}
        edit(path, "name: [broken")
        proc.send_signal(
            signal.SIGHUP
        )  # uvicorn starts a new worker first: it cannot load, the old one stays
        time.sleep(1.0)
        assert {ask(url) for _ in range(6)} == {"first"}
        time.sleep(6)  # uvicorn gives a replacement 5 s to come up before it gives up the restart
        edit(path, policy("second"))
        proc.send_signal(signal.SIGHUP)
        assert eventually(lambda: answers_during_restart(url) == {"second"}, within=60)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
