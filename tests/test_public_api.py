"""The public API: a curated, sorted __all__, every name importable, and a light import."""

from __future__ import annotations

import subprocess
import sys

import cascade


def test_all_is_sorted_and_importable() -> None:
    assert cascade.__all__ == sorted(cascade.__all__)
    for name in cascade.__all__:
        assert hasattr(cascade, name), name


def test_import_is_light() -> None:
    code = (
        "import sys, cascade; heavy = [m for m in ('openai', 'anthropic', 'langchain_core', 'numpy', 'httpx2')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_every_error_of_the_tree_is_exported() -> None:
    """A caller catches any cascade error by its public name (issue 23: two were missing)."""
    import inspect

    from cascade import errors

    tree = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, errors.CascadeError) and not name.startswith("_")
    }
    assert tree - set(cascade.__all__) == set()
