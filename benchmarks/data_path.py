"""Where the recorded outcomes are: the one owner of that default, for the benchmarks and the tests.

``$CASCADE_DATA``, else ``../shared/data`` beside the repository root (from a git worktree: beside the
main checkout). Imported as ``data_path`` by a benchmark run as ``python benchmarks/X.py`` (its folder
is on ``sys.path``) and as ``benchmarks.data_path`` by the tests.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def repository_root(path: Path = ROOT) -> Path:
    """The repository's root: ``path`` itself, or for a git worktree (a ``.git`` file pointing into
    ``MAIN/.git/worktrees/NAME``) the main checkout ``MAIN`` that shares its ``.git``."""
    dot_git = path / ".git"
    if not dot_git.is_file():
        return path
    text = dot_git.read_text(encoding="utf-8").strip()
    if not text.startswith("gitdir:"):
        return path
    gitdir = (path / text.removeprefix("gitdir:").strip()).resolve()
    common = gitdir / "commondir"
    shared = (gitdir / common.read_text(encoding="utf-8").strip()).resolve() if common.exists() else gitdir
    return shared.parent if shared.name == ".git" else path


def default_data(root: Path = ROOT) -> Path:
    """``$CASCADE_DATA``, else ``../shared/data`` relative to the repository root."""
    env = os.environ.get("CASCADE_DATA")
    return Path(env) if env else repository_root(root).parent / "shared" / "data"
