"""Answer extraction and similarity, for scorers that compare answers (self-consistency, features).

An *extractor* turns a sample's text into a canonical answer key (a string), or ``None`` when
no answer can be found; two samples agree when their keys are equal. Built-in kinds:

=============  ==============================================================================
``number``     ``\\boxed{}``, a JSON ``"answer"`` field, "the answer is", ``####``, else the last
               number; commas, currency, units, percents and fractions handled (``1,000`` ==
               ``1000.0``, ``3/4`` == ``0.75``)
``choice``     a multiple-choice letter (``(B)``, ``Answer: B``, ``B)``, a lone ``B``)
``date``       the last date, as ``YYYY-MM-DD`` (``04/21/2021``, ``April 21, 2021``, ISO)
``json_field`` a field of a JSON object in the text (dotted path), canonical JSON
``regex``      group 1 (or the whole match) of the last match of a pattern
``literal``    a Python literal or call of literals (``f('a', 1)`` == ``f("a", 1)``), canonical repr
``text``       normalised short text (case, punctuation, articles and spaces removed)
``exact``      the stripped text as is
``callable``   a user function ``"package.module:function"`` taking the text, returning str | None
=============  ==============================================================================

Tool calls compare by tool name and arguments (:func:`tool_call_key`). Free-form answers compare
by :func:`similarity` (token-set Jaccard, character n-gram Jaccard, or difflib's ratio).
"""

from __future__ import annotations

import ast
import difflib
import importlib
import json
import re
import string
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, Literal

from cascade.types import ToolCall

Extractor = Callable[[str], str | None]
ExtractorKind = Literal[
    "number", "choice", "date", "json_field", "regex", "literal", "text", "exact", "callable"
]
SimilarityKind = Literal["jaccard", "char_ngram", "difflib"]

# -- numbers ----------------------------------------------------------------------------------

_BOXED = re.compile(r"\\boxed\s*\{")
_NUM = r"[-+−]?\s?[$€£]?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?%?|[-+]?\.\d+%?"
_NUMBER = re.compile(_NUM)
_ANSWER_CUES = (
    re.compile(r"####\s*(.+)"),
    re.compile(r"(?i)final answer\s*(?:is|:|=)?\s*[:=]?\s*(.+)"),
    re.compile(r"(?i)the answer is\s*[:=]?\s*(.+)"),
    re.compile(r"(?im)^\s*answer\s*[:=]\s*(.+)"),
)
_FRAC = re.compile(r"\\d?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_JSON_ANSWER = re.compile(r'"answer"\s*:\s*("(?:[^"\\]|\\.)*"|[-+0-9.,/ $%eE]+)')


def _boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (balanced braces)."""
    last = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            last = text[m.end() : i - 1]
    return last


def canonical_number(token: str) -> str | None:
    """``"$1,234.50"`` -> ``"1234.5"``; ``"3/4"`` -> ``"0.75"``; ``"12%"`` -> ``"12"``; else None."""
    t = token.strip().replace("−", "-").replace(",", "").replace("$", "").replace("€", "").replace("£", "")
    t = t.replace(" ", "").rstrip("%").rstrip(".")
    if not t:
        return None
    try:
        if "/" in t:
            num, _, den = t.partition("/")
            value = Fraction(num) / Fraction(den)
        else:
            value = Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    try:
        return f"{float(value):.10g}"
    except OverflowError:  # a fraction too large for a float keeps its exact form
        return f"{value.numerator}/{value.denominator}"


def _last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    for token in reversed(found):
        value = canonical_number(token)
        if value is not None:
            return value
    return None


def _json_string(raw: str) -> str:
    """A JSON string token's text; an invalid one (LaTeX's ``"3\\sqrt{5}"``) is read as written."""
    if not raw.startswith('"'):
        return raw
    try:
        value = json.loads(raw)
    except ValueError:
        return raw[1:-1]
    return value if isinstance(value, str) else raw


def extract_number(text: str) -> str | None:
    """The final numeric answer of ``text`` (see the module table), canonical."""
    boxed = _boxed(text)
    if boxed is not None:
        boxed = _FRAC.sub(r"\1/\2", boxed)
        value = _last_number(boxed)
        if value is not None:
            return value
    json_hits = list(_JSON_ANSWER.finditer(text))
    if json_hits:
        m = json_hits[-1]
        value = _last_number(_json_string(m.group(1)))
        if value is not None:
            return value
    for cue in _ANSWER_CUES:
        hits = cue.findall(text)
        if hits:
            value = _first_number(hits[-1])
            if value is not None:
                return value
    return _last_number(text)


def _first_number(text: str) -> str | None:
    for token in _NUMBER.findall(text):
        value = canonical_number(token)
        if value is not None:
            return value
    return None


# -- multiple choice --------------------------------------------------------------------------


_CUED_ANY = re.compile(
    r"(?:[Aa]nswer|[Oo]ption|[Cc]hoice)\s*(?:is|:|=)?\s*(?:[Oo]ption\s*)?[\(\[]?([A-Z])\b[\)\]]?"
)


def choice_letters(values: Sequence[Any]) -> str:
    """The letter set a multiple-choice file uses: ``A`` through the last single capital letter
    among ``values`` (references or recorded answers; ``AB`` for two-choice data), ``ABCDE`` (the
    scorer's default) when there is none."""
    seen = [str(v).strip().upper() for v in values if v is not None]
    top = max((ord(v) for v in seen if len(v) == 1 and "A" <= v <= "Z"), default=ord("E"))
    return string.ascii_uppercase[: top - ord("A") + 1]


def choice_extractor(letters: str = "ABCDE") -> Extractor:
    """An extractor for a multiple-choice letter among ``letters``. An answer cued with a letter
    outside the set (``Answer: G`` with ``ABCDE``) is not read: a ``choice_outside_letters``
    warning event is logged (once per extractor) so a too-small ``choices:`` does not go unseen."""
    cls = re.escape(letters)
    warned: list[bool] = []
    cued = re.compile(
        rf"(?:[Aa]nswer|[Oo]ption|[Cc]hoice)\s*(?:is|:|=)?\s*(?:[Oo]ption\s*)?[\(\[]?([{cls}])\b[\)\]]?"
    )
    paren = re.compile(rf"[\(\[]([{re.escape(letters)}])[\)\]]")
    leading = re.compile(rf"^\s*[\(\[]?([{re.escape(letters)}])(?:[\)\].:,]|\s|$)")
    lone = re.compile(rf"\b([{re.escape(letters)}])\b")

    def extract(text: str) -> str | None:
        hits = cued.findall(text)
        if hits:
            return str(hits[-1]).upper()
        if not warned:
            outside = [h for h in _CUED_ANY.findall(text) if h not in letters]
            if outside:
                from cascade.logging import get_logger

                warned.append(True)
                get_logger().warning("choice_outside_letters", letter=outside[-1], choices=letters)
        m = leading.match(text)
        if m:
            return m.group(1)
        hits = paren.findall(text)
        if hits:
            return str(hits[-1])
        hits = lone.findall(text)
        return str(hits[-1]) if len(set(hits)) == 1 else None

    return extract


# -- JSON, regex, literals, text --------------------------------------------------------------

_FENCED = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)```", re.DOTALL)


def _json_objects(text: str) -> list[Any]:
    """JSON values found in ``text``: fenced blocks, the whole text, then each ``{...}`` object."""
    out: list[Any] = []
    candidates = [m.group(1) for m in _FENCED.finditer(text)] + [text]
    for c in candidates:
        c = c.strip()
        try:
            out.append(json.loads(c))
            continue
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            pass
        out.extend(_objects_in(c))
    return out


_DECODER = json.JSONDecoder()


def _objects_in(c: str) -> list[Any]:
    """Each ``{...}`` object in ``c``, left to right (an object's inner objects are part of it).

    Untrusted text (a model's answer) must not make this quadratic: a failed decode costs the
    position it failed at (the decoder counts the lines before it), so the failed attempts share a
    budget of work proportional to the text, and no attempt starts after the last ``}``.
    """
    out: list[Any] = []
    last = c.rfind("}")
    if last == -1:
        return out
    budget = 16 * len(c) + _DECODE_BUDGET
    i = c.find("{", 0, last)
    while i != -1:
        try:
            value, end = _DECODER.raw_decode(c, i)
        except ValueError as exc:  # json.JSONDecodeError
            budget -= max(getattr(exc, "pos", len(c)), i + 1)
        except RecursionError:  # nested past the parser's depth
            budget -= len(c)
        else:
            out.append(value)
            i = c.find("{", end, last)
            continue
        if budget <= 0:
            break
        i = c.find("{", i + 1, last)
    return out


_DECODE_BUDGET = 4_000_000  # characters of failed decoding allowed beyond 16 per character of text


def canonical_json(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def json_field_extractor(field: str) -> Extractor:
    """An extractor for ``field`` (a dotted path, ``a.b.0``) of a JSON object in the text."""
    path = field.split(".")

    def extract(text: str) -> str | None:
        for obj in reversed(_json_objects(text)):
            value: Any = obj
            for part in path:
                if isinstance(value, Mapping) and part in value:
                    value = value[part]
                elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                    value = value[int(part)]
                else:
                    break
            else:
                return canonical_json(value)
        return None

    return extract


def regex_extractor(pattern: str, *, ignore_case: bool = False, first: bool = False) -> Extractor:
    """Group 1 (or the whole match) of the last (or first) match of ``pattern``."""
    rx = re.compile(pattern, re.IGNORECASE if ignore_case else 0)

    def extract(text: str) -> str | None:
        matches = list(rx.finditer(text))
        if not matches:
            return None
        m = matches[0] if first else matches[-1]
        value = m.group(1) if rx.groups else m.group(0)
        return None if value is None else value.strip()

    return extract


def _literal_repr(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        func = ast.unparse(node.func)
        args = [_literal_repr(a) for a in node.args]
        args += [f"{k.arg}={_literal_repr(k.value)}" for k in node.keywords]
        return f"{func}({', '.join(args)})"
    return repr(ast.literal_eval(node))


_PARSE_LOCK = threading.Lock()


def _parse(text: str, mode: Literal["eval", "exec"]) -> Any:
    """``ast.parse`` without its SyntaxWarnings (``1if x`` is an answer, not our code) on stderr."""
    with _PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return ast.parse(text, mode=mode)


# what ast.parse raises on text that is no Python: bad syntax, null bytes, nesting past its limits
_UNPARSABLE = (SyntaxError, ValueError, RecursionError, MemoryError)
_ANSWER_PREFIX = re.compile(r"(?is)^(?:the\s+)?(?:answer|output|result)\s*(?:is|:|=)\s*")


def extract_literal(text: str) -> str | None:
    """A Python literal (or a call with literal arguments) in canonical ``repr`` form.

    Fenced code and an ``answer:`` prefix are stripped; ``assert f(x) == y`` gives ``y``;
    text that is not a literal falls back to its stripped form.
    """
    fenced = _FENCED.search(text)
    t = (fenced.group(1) if fenced else text).strip()
    t = _ANSWER_PREFIX.sub("", t).strip().rstrip(";").strip()
    if not t:
        return None
    try:
        tree = _parse(t, "eval").body
    except _UNPARSABLE:
        try:
            stmt = _parse(t, "exec").body
        except _UNPARSABLE:
            return t
        if len(stmt) == 1 and isinstance(stmt[0], ast.Assert) and isinstance(stmt[0].test, ast.Compare):
            tree = stmt[0].test.comparators[-1]
        else:
            return t
    try:
        return _literal_repr(tree)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return t


_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ]
    )
    for m in names
}
_DATES = re.compile(
    r"(?P<iso>\b(\d{4})-(\d{1,2})-(\d{1,2})\b)"
    r"|(?P<us>\b(\d{1,2})/(\d{1,2})/(\d{4})\b)"
    r"|(?P<name>\b([A-Za-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b)"
)


def extract_date(text: str) -> str | None:
    """The last date in ``text`` as ``YYYY-MM-DD`` (``04/21/2021``, ``April 21, 2021``, ``2021-04-21``;
    slashes read month first)."""
    for m in reversed(list(_DATES.finditer(text))):
        g = m.groups()
        if m.group("iso"):
            y, mo, d = int(g[1]), int(g[2]), int(g[3])
        elif m.group("us"):
            mo, d, y = int(g[5]), int(g[6]), int(g[7])
        else:
            month = _MONTHS.get(g[9].lower())
            if month is None:
                continue
            mo, d, y = month, int(g[10]), int(g[11])
        if 1 <= mo <= 12 and 1 <= d <= 31:
            return f"{y:04d}-{mo:02d}-{d:02d}"
    return None


_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def extract_text(text: str) -> str | None:
    value = normalize_text(text)
    return value or None


def extract_exact(text: str) -> str | None:
    value = text.strip()
    return value or None


def import_callable(path: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function (ValueError with a clear message)."""
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'package.module:function', got {path!r}")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import {path!r}: {err}") from None
    if not callable(obj):
        raise ValueError(f"{path!r} is not callable")
    return obj  # type: ignore[no-any-return]


def make_extractor(
    kind: ExtractorKind,
    *,
    pattern: str | None = None,
    field: str | None = None,
    function: str | None = None,
    choices: str = "ABCDE",
    ignore_case: bool = False,
) -> Extractor:
    """Build a named extractor (options as in :class:`SelfConsistencyScorer.Options`)."""
    if kind == "number":
        return extract_number
    if kind == "choice":
        return choice_extractor(choices)
    if kind == "date":
        return extract_date
    if kind == "json_field":
        if not field:
            raise ValueError("extractor 'json_field' needs `field`")
        return json_field_extractor(field)
    if kind == "regex":
        if not pattern:
            raise ValueError("extractor 'regex' needs `pattern`")
        return regex_extractor(pattern, ignore_case=ignore_case)
    if kind == "literal":
        return extract_literal
    if kind == "text":
        return extract_text
    if kind == "exact":
        return extract_exact
    if kind == "callable":
        if not function:
            raise ValueError("extractor 'callable' needs `function` ('package.module:function')")
        fn = import_callable(function)

        def call(text: str) -> str | None:
            value = fn(text)
            return None if value is None else str(value)

        return call
    raise ValueError(f"unknown extractor {kind!r}")


def tool_call_key(calls: Sequence[ToolCall]) -> str:
    """Tool calls as one comparable key: names and arguments (order of keys ignored)."""
    return "tool:" + json.dumps(
        [[c.name, c.arguments] for c in calls], sort_keys=True, separators=(",", ":"), default=str
    )


# -- similarity -------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def token_jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the two texts' lower-cased word sets."""
    return _jaccard(set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower())))


def char_ngram_jaccard(a: str, b: str, n: int = 3) -> float:
    """Jaccard similarity of character ``n``-gram sets (spaces collapsed, lower case)."""

    def grams(s: str) -> set[str]:
        s = " ".join(s.lower().split())
        return {s[i : i + n] for i in range(max(len(s) - n + 1, 1))}

    return _jaccard(grams(a), grams(b))


def difflib_ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


SIMILARITIES: dict[str, Callable[[str, str], float]] = {
    "jaccard": token_jaccard,
    "char_ngram": char_ngram_jaccard,
    "difflib": difflib_ratio,
}


def similarity(a: str, b: str, kind: SimilarityKind = "jaccard") -> float:
    """Similarity in [0, 1] of two free-form answers."""
    return SIMILARITIES[kind](a, b)


__all__ = [
    "SIMILARITIES",
    "Extractor",
    "ExtractorKind",
    "SimilarityKind",
    "canonical_json",
    "canonical_number",
    "char_ngram_jaccard",
    "choice_extractor",
    "choice_letters",
    "difflib_ratio",
    "extract_date",
    "extract_exact",
    "extract_literal",
    "extract_number",
    "extract_text",
    "import_callable",
    "json_field_extractor",
    "make_extractor",
    "normalize_text",
    "regex_extractor",
    "similarity",
    "token_jaccard",
    "tool_call_key",
]
