"""LangChain runs are logged, and pinned by the session named in the run's metadata."""

from __future__ import annotations

from pathlib import Path

from cascade.langchain import CascadeChatModel
from cascade.observe import SessionPins
from tests.observe.support import observed, rows


def test_session_from_run_metadata_pins_and_is_logged(tmp_path: Path) -> None:
    c, _ = observed(tmp_path, pins=SessionPins(60))
    chat = CascadeChatModel(cascade=c)
    config = {"metadata": {"session_id": "conv-7"}}
    first = chat.invoke("hi", config=config)  # type: ignore[arg-type]
    second = chat.invoke("hi again", config=config)  # type: ignore[arg-type]
    other = chat.invoke("hi", config={"metadata": {"thread_id": "t-1"}})  # type: ignore[arg-type]
    c.close()
    assert first.content == second.content == "b"
    assert "pinned" in str(second.response_metadata["cascade"]) and "pinned" not in str(
        first.response_metadata
    )
    assert "pinned" not in str(other.response_metadata["cascade"])
    logged = rows(tmp_path)
    assert [r["cascade"].get("session") for r in logged] == ["conv-7", "conv-7", "t-1"]
    assert logged[1]["cascade"]["pinned"] == "medium"


async def test_async_runs_are_logged(tmp_path: Path) -> None:
    c, _ = observed(tmp_path)
    chat = CascadeChatModel(cascade=c)
    await chat.ainvoke("hi")
    await c.aclose()
    assert len(rows(tmp_path)) == 1
