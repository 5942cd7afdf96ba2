"""``batch``/``abatch`` pin sessions like ``run``/``arun`` (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.errors import InvalidRequestError
from cascade.observe import SessionPins
from tests.observe.support import observed


def _pinned(result: object) -> bool:
    return bool(result.attempts[0].reason.startswith("pinned"))  # type: ignore[attr-defined]


def test_batch_pins_one_session_for_every_prompt(tmp_path: Path) -> None:
    c, _ = observed(tmp_path, pins=SessionPins(60))
    c.run("q", session="agent")  # escalates to medium: the session is pinned there
    results = c.batch(["a", "b"], session="agent", concurrency=1)
    assert all(_pinned(r) for r in results)
    c.close()


def test_batch_takes_one_session_per_prompt(tmp_path: Path) -> None:
    c, _ = observed(tmp_path, pins=SessionPins(60))
    c.run("q", session="agent")
    results = c.batch(["a", "b", "c"], session=["agent", None, "other"], concurrency=1)
    assert [_pinned(r) for r in results] == [True, False, False]
    c.close()


async def test_abatch_pins_sessions(tmp_path: Path) -> None:
    c, _ = observed(tmp_path, pins=SessionPins(60))
    await c.arun("q", session="agent")
    results = await c.abatch(["a", "b"], session=["agent", "new"])
    assert [_pinned(r) for r in results] == [True, False]
    await c.aclose()


def test_a_session_list_of_the_wrong_length_is_a_clear_error(tmp_path: Path) -> None:
    c, _ = observed(tmp_path, pins=SessionPins(60))
    with pytest.raises(InvalidRequestError, match="2 sessions for 3 prompts"):
        c.batch(["a", "b", "c"], session=["x", "y"])
    c.close()
