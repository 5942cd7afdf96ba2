"""A guard against tests that age: no literal window date in a bucket name.

Ledgers drop a window's spend ``retention`` after the window ends, so a test naming a fixed day
(a day such as the 23rd of November 2026) passes for a week and then fails for ever. Build buckets from
``tests.clock`` instead; a line that only checks how a fixed clock names buckets, with no ledger
behind it, says so with the marker ``literal date ok``.
"""

from __future__ import annotations

import re
from pathlib import Path

LITERAL_WINDOW = re.compile(r"\b(?:day|month):(?:19|20)\d\d-\d\d")
TESTS = Path(__file__).parent


def literal_window_dates(text: str) -> list[int]:
    """Line numbers (1-based) of ``text`` that name a literal day or month bucket without the marker."""
    return [
        n
        for n, line in enumerate(text.splitlines(), 1)
        if LITERAL_WINDOW.search(line) and "literal date ok" not in line
    ]


def test_the_guard_sees_a_literal_window_date() -> None:
    day = "day:" + "2026-11-23"
    assert literal_window_dates(f'DAY = "policy:p|{day}"\nok = 1\n') == [1]
    assert literal_window_dates('f"policy:p|' + 'month:2026-02"  # literal date ok: naming\n') == []
    assert literal_window_dates('f"policy:p|day:{now:%Y-%m-%d}"\n') == []


def test_no_test_file_names_a_literal_window_date() -> None:
    found = [
        f"{path.relative_to(TESTS)}:{n}"
        for path in sorted(TESTS.rglob("*.py"))
        for n in literal_window_dates(path.read_text(encoding="utf-8"))
    ]
    assert not found, f"literal window dates age (build them from tests.clock): {found}"
