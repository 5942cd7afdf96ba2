"""Recorded-outcome files are untrusted input too: negative usage or cost is never settled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascade.errors import PermanentProviderError
from cascade.providers.replay import ReplayProvider
from cascade.request import Request


@pytest.mark.parametrize(
    "sample",
    [
        {"text": "a", "input_tokens": 5, "output_tokens": -9},
        {"text": "a", "input_tokens": -5, "output_tokens": 9},
        {"text": "a", "input_tokens": 5, "output_tokens": 9, "cost_usd": -0.6},
    ],
)
def test_negative_recorded_usage_is_refused(tmp_path: Path, sample: dict[str, object]) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "1", "prompt": "q", "responses": {"m": [sample]}}) + "\n")
    p = ReplayProvider(str(path), "m")
    with pytest.raises(PermanentProviderError, match="negative tokens or cost"):
        p.complete(Request.of("q"))
    assert p.max_usage(Request.of("q")).output_tokens == 0  # the refused record reserves nothing


def test_good_records_still_replay(tmp_path: Path) -> None:
    path = tmp_path / "good.jsonl"
    sample = {"text": "a", "input_tokens": 5, "output_tokens": 9, "cost_usd": 0.001}
    path.write_text(json.dumps({"id": "1", "prompt": "q", "responses": {"m": [sample]}}) + "\n")
    completion = ReplayProvider(str(path), "m").complete(Request.of("q"))
    assert completion.cost is not None and completion.cost > 0 and completion.usage.output_tokens == 9
