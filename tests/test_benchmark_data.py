"""``benchmarks/run_all.py`` finds the recorded outcomes from a checkout or a git worktree."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT


def _run_all() -> Any:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run_all

    return run_all


def _worktree(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``main/`` (a checkout), ``wt/fixes`` (its worktree) and ``shared/data`` beside ``main``."""
    main, wt, data = tmp_path / "main", tmp_path / "wt" / "fixes", tmp_path / "shared" / "data"
    (main / ".git" / "worktrees" / "fixes").mkdir(parents=True)
    (main / ".git" / "worktrees" / "fixes" / "commondir").write_text("../..\n")
    wt.mkdir(parents=True)
    (wt / ".git").write_text(f"gitdir: {main / '.git' / 'worktrees' / 'fixes'}\n")
    data.mkdir(parents=True)
    (data / "README.md").write_text("recorded outcomes\n")
    return main, wt, data


def test_the_default_data_is_beside_the_repository_root_from_a_worktree_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_all = _run_all()
    main, wt, data = _worktree(tmp_path)
    monkeypatch.delenv("CASCADE_DATA", raising=False)
    assert run_all.default_data(main) == data
    assert run_all.default_data(wt) == data  # not wt/shared/data
    monkeypatch.setenv("CASCADE_DATA", str(tmp_path / "elsewhere"))
    assert run_all.default_data(wt) == tmp_path / "elsewhere"


def test_absent_data_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_all = _run_all()
    monkeypatch.setenv("CASCADE_DATA", str(tmp_path / "none"))
    assert run_all.main([]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "none") in err and "--data" in err and "CASCADE_DATA" in err
    assert run_all.main(["--data", str(tmp_path / "other")]) == 2
    assert str(tmp_path / "other") in capsys.readouterr().err


def test_one_owner_finds_the_recorded_outcomes() -> None:
    """The benchmarks and the tests ask ``benchmarks/data_path.py``; none keeps its own default."""
    owner = ROOT / "benchmarks" / "data_path.py"
    copies = [
        str(f.relative_to(ROOT))
        for folder in ("benchmarks", "tests")
        for f in sorted((ROOT / folder).rglob("*.py"))
        if f != owner
        and re.search(r"(parent|parents\[\d\]) / .shared. / .data.", f.read_text(encoding="utf-8"))
    ]
    assert copies == []
