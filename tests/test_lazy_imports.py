"""Paths that do not use LangChain or a provider SDK do not import them (issue 24: importing the test
doubles loaded LangChain, 35 -> 64 MB, and the bigger heap slows garbage collection everywhere)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("langchain_core", "openai", "anthropic")


def _loaded_after(code: str) -> dict[str, bool]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded: dict[str, bool] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_test_doubles_and_running_the_demo_loads_no_sdk() -> None:
    code = (
        "from cascade import Cascade\n"
        "from cascade.testing import FixedScorer, ScriptedProvider\n"
        "assert Cascade.from_policy('policies/demo.yaml').run('What is 2+2?').answer == '2 + 2 = 4'\n"
    )
    assert _loaded_after(code) == dict.fromkeys(HEAVY, False)


def test_the_scripted_chat_model_still_comes_from_cascade_testing() -> None:
    code = "from cascade.testing import ScriptedChatModel\nassert ScriptedChatModel(script=['x']).invoke('q').content == 'x'"
    assert _loaded_after(code)["langchain_core"] is True
