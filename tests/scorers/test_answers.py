"""Answer extractors and similarity."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cascade.scorers import answers
from cascade.scorers.answers import (
    choice_extractor,
    extract_literal,
    extract_number,
    json_field_extractor,
    make_extractor,
    normalize_text,
    regex_extractor,
    similarity,
    tool_call_key,
)
from cascade.types import ToolCall


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The total is $1,234.50 dollars.", "1234.5"),
        ("so the answer is \\boxed{\\frac{3}{4}}", "0.75"),
        ("\\boxed{42} and then 7", "42"),
        ('```json\n{"reasoning": "3 * 60 = 180", "answer": "540"}\n```', "540"),
        ('{"answer": 12.0}', "12"),
        ("The answer is 3/4 cup.", "0.75"),
        ("step 1: 5 + 6 = 11\n#### 72", "72"),
        ("It grows by 12%.", "12"),
        ("-3.0", "-3"),
        ("Final answer: 18 meters. Check: 5 + 13", "18"),
        ("He walks 5 km to the store", "5"),
        ("no number here", None),
    ],
)
def test_extract_number(text: str, expected: str | None) -> None:
    assert extract_number(text) == expected


def test_number_keys_agree_across_formats() -> None:
    assert extract_number("1,000") == extract_number("1000.00") == extract_number("$1000")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A\n", "A"),
        ("The answer is (C).", "C"),
        ("B) dry palms", "B"),
        ("I think the correct option is D", "D"),
        ("Answer: b", None),  # lower-case letters are words, not choices
        ("the answer is a bit unclear", None),
        ("Between (A) and (C), I pick (C)", "C"),
        ("I am not sure", None),
    ],
)
def test_choice(text: str, expected: str | None) -> None:
    assert choice_extractor()(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('f("bcks", "r")', "f('bcks', 'r')"),
        ("f('bcks', 'r')", "f('bcks', 'r')"),
        ("'abc'", "'abc'"),
        ("[1, 2]", "[1, 2]"),
        ("answer: (1,2)", "(1, 2)"),
        ("assert f(1) == [1]", "[1]"),
        ("```python\n{'a': 1}\n```", "{'a': 1}"),
        ("f(x=1, y='a')", "f(x=1, y='a')"),
        ("hello world", "hello world"),
    ],
)
def test_extract_literal(text: str, expected: str) -> None:
    assert extract_literal(text) == expected


def test_json_field_nested_and_missing() -> None:
    ext = json_field_extractor("result.value")
    assert ext('blah {"result": {"value": [1, 2]}} trailing') == "[1,2]"
    assert ext('{"other": 1}') is None
    assert json_field_extractor("answer")('```json\n{"answer": " Paris "}\n```') == "Paris"


def test_regex_extractor_uses_group_and_last_match() -> None:
    ext = regex_extractor(r"A: (\d{2}/\d{2}/\d{4})")
    assert ext("A: 01/02/2020\nA: 04/21/2021") == "04/21/2021"
    assert regex_extractor(r"\d+")("a 1 b 22") == "22"
    assert ext("nothing") is None


def test_text_normalisation() -> None:
    assert normalize_text("The  Eiffel Tower!") == normalize_text("eiffel tower")
    assert make_extractor("text")("   ") is None
    assert make_extractor("exact")(" X ") == "X"


def test_callable_extractor_by_import_path() -> None:
    ext = make_extractor("callable", function="cascade.scorers.answers:normalize_text")
    assert ext("The Cat.") == "cat"
    with pytest.raises(ValueError, match=r"package\.module:function"):
        make_extractor("callable", function="no_colon")
    with pytest.raises(ValueError, match="cannot import"):
        make_extractor("callable", function="cascade.nope:fn")


def test_make_extractor_needs_its_options() -> None:
    with pytest.raises(ValueError, match="pattern"):
        make_extractor("regex")
    with pytest.raises(ValueError, match="field"):
        make_extractor("json_field")


def test_tool_call_key_ignores_argument_order_and_id() -> None:
    a = tool_call_key([ToolCall("search", {"q": "x", "n": 2}, id="1")])
    b = tool_call_key([ToolCall("search", {"n": 2, "q": "x"}, id="2")])
    c = tool_call_key([ToolCall("search", {"n": 3, "q": "x"})])
    assert a == b != c


def test_similarities() -> None:
    a, b = "Paris is the capital of France.", "The capital of France is Paris"
    for kind in answers.SIMILARITIES:
        assert similarity(a, a, kind) == pytest.approx(1.0)  # type: ignore[arg-type]
        assert 0 <= similarity(a, "bananas", kind) < 0.5  # type: ignore[arg-type]
    assert similarity(a, b, "jaccard") == pytest.approx(1.0)
    assert similarity(a, b, "char_ngram") > 0.5


HOSTILE = [
    r'{"answer": "3\sqrt{5}"}',  # LaTeX backslashes: not a valid JSON string
    '{"answer": "1\\u00"}',  # a truncated escape
    "1" + "0" * 400 + "/3",  # a fraction past float's range
    r"\boxed{1" + "0" * 400 + "/7}",
    "[" * 100_000,  # nesting past the JSON parser's depth
    '{"a": ' * 100_000,
    "(" * 200_000,  # nesting past Python's parser
    "a\x00b",  # a null byte, which ast.parse refuses
    "",
    "\ud800",  # a lone surrogate
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize(
    "kind", ["number", "choice", "date", "json_field", "regex", "literal", "text", "exact"]
)
def test_builtin_extractors_never_raise(kind: answers.ExtractorKind, text: str) -> None:
    extract = answers.make_extractor(kind, field="answer", pattern=r"(\d+)")
    value = extract(text)
    assert value is None or isinstance(value, str)


def test_latex_in_a_json_answer_is_read_not_raised() -> None:
    assert extract_number(r'{"answer": "3\sqrt{5}"}') == "5"  # as the last-number fallback reads it
    assert extract_number(r'{"answer": "\frac{1}{2}", "x": 1}') is not None
    assert answers.canonical_number("1" + "0" * 400 + "/3") == "1" + "0" * 400 + "/3"


def test_hostile_braces_cost_decoding_work_in_proportion_to_the_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model's answer full of ``{`` once made the JSON extractor quadratic (600 KB of ``{``: 46 s):
    each failed decode counts the lines before its failure. Failed attempts now share a budget."""
    calls: list[int] = []

    class Counting(json.JSONDecoder):
        def raw_decode(self, s: str, idx: int = 0) -> tuple[Any, int]:
            calls.append(idx)
            return super().raw_decode(s, idx)

    monkeypatch.setattr(answers, "_DECODER", Counting())
    monkeypatch.setattr(answers, "_DECODE_BUDGET", 0)
    n = 50_000
    assert answers._json_objects("{" * n + '"x"') == []  # no "}" after: nothing can close
    assert calls == []
    text = "{" * n + "}"
    assert answers._json_objects(text) == []
    assert 0 < sum(i + 1 for i in calls) <= 17 * len(text)  # each failed attempt costs >= its position
    assert len(calls) < n // 10  # was one per "{"
    calls.clear()
    assert answers._json_objects('a {"answer": 4} b ' * 1000)[-1] == {"answer": 4}  # found ones cost nothing
    assert len(calls) == 1000
