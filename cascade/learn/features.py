"""Features of (prompt, answer samples) for the confidence classifier, in numpy.

Sparse hashed features: word uni/bi-grams of the prompt and of the answer, character n-grams of
the answer (each group log-counted and L2-normalised). Dense features: lengths, numeric patterns,
hedging and refusal phrases, format cues, token logprob statistics (when the provider returned
logprobs) and sample agreement (when there are several samples). Hashing is stable across
processes and machines (CRC32 of words, a polynomial hash of UTF-8 bytes for character n-grams),
so a trained artifact means the same thing everywhere.

A feature vector is a pair ``(indices, values)``; :class:`Rows` stacks them as a CSR matrix with the
two products logistic regression needs.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cascade.scorers.answers import extract_text
from cascade.types import Sample

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

_WORD = re.compile(r"\w+|[^\w\s]")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_HEDGES = re.compile(
    r"\b(?:i think|i believe|maybe|perhaps|possibly|probably|might|may be|not sure|unsure|uncertain|"
    r"it seems|seems to|appears to|approximately|roughly|likely|unclear|guess|assume|assuming|"
    r"i'm not|i am not|could be|hard to say|depends)\b"
)
_REFUSALS = re.compile(
    r"\b(?:sorry|i cannot|i can't|i can not|unable to|as an ai|i don't know|i do not know|"
    r"not possible|cannot be determined|insufficient information|i apologi[sz]e)\b"
)
_MULT = np.uint64(0x9E3779B97F4A7C15)
_BYTE_P = np.uint64(0x100000001B3)

DENSE = (
    "answer_chars",
    "answer_words",
    "prompt_chars",
    "answer_prompt_ratio",
    "answer_empty",
    "answer_numbers",
    "answer_ends_with_number",
    "answer_numbers_in_prompt",
    "prompt_numbers",
    "hedges",
    "refusals",
    "question_marks",
    "has_code",
    "has_json",
    "has_boxed",
    "answer_lines",
    "last_line_chars",
    "repetition",
    "logprobs_present",
    "logprob_mean",
    "logprob_min",
    "logprob_p10",
    "top_margin_mean",
    "agreement_present",
    "agreement",
    "distinct_share",
)


# which feature group each dense column belongs to (a policy or training run may choose groups)
GROUPS = ("prompt", "answer", "logprobs", "agreement")
_DENSE_GROUP = {
    "prompt_chars": "prompt",
    "prompt_numbers": "prompt",
    **{name: "logprobs" for name in DENSE if name.startswith(("logprob", "top_margin"))},
    "agreement_present": "agreement",
    "agreement": "agreement",
    "distinct_share": "agreement",
}


def dense_mask(groups: Sequence[str]) -> Floats:
    """1 for the dense columns of the chosen ``groups``, 0 for the others."""
    chosen = set(groups)
    return np.array([1.0 if _DENSE_GROUP.get(n, "answer") in chosen else 0.0 for n in DENSE])


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """What to hash and how big the hashed space is (``2 ** bits`` columns)."""

    bits: int = 16
    word_ngrams: int = 2
    char_ngrams: tuple[int, int] = (3, 4)
    answer_chars: int = 2000
    prompt_chars: int = 2000
    char_tail: int = 2000
    groups: tuple[str, ...] = GROUPS

    @property
    def hashed(self) -> int:
        return 1 << self.bits

    @property
    def width(self) -> int:
        return self.hashed + len(DENSE)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["char_ngrams"] = list(self.char_ngrams)
        d["groups"] = list(self.groups)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> FeatureConfig:
        grams: Any = d.get("char_ngrams", (3, 4))
        lo, hi = int(grams[0]), int(grams[1])
        groups: Any = d.get("groups", GROUPS)
        if not isinstance(groups, list | tuple) or not set(groups) <= set(GROUPS) or not groups:
            raise ValueError(f"feature groups must be a non-empty subset of {list(GROUPS)}, got {groups!r}")
        return cls(
            bits=int(d.get("bits", 16)),  # type: ignore[call-overload]
            word_ngrams=int(d.get("word_ngrams", 2)),  # type: ignore[call-overload]
            char_ngrams=(int(lo), int(hi)),
            answer_chars=int(d.get("answer_chars", 2000)),  # type: ignore[call-overload]
            prompt_chars=int(d.get("prompt_chars", 2000)),  # type: ignore[call-overload]
            char_tail=int(d.get("char_tail", 2000)),  # type: ignore[call-overload]
            groups=tuple(str(g) for g in groups),
        )


_word_hash_cache: dict[str, int] = {}


def _word_hashes(words: Sequence[str]) -> npt.NDArray[np.uint64]:
    cache = _word_hash_cache
    out = list(map(cache.get, words))
    if None in out:
        for i, w in enumerate(words):
            if out[i] is None:
                h = zlib.crc32(w.encode("utf-8")) + 1
                if len(cache) < 500_000:
                    cache[w] = h
                out[i] = h
    return np.array(out, dtype=np.uint64)


def _bucket(h: npt.NDArray[np.uint64], salt: int, bits: int) -> Ints:
    with np.errstate(over="ignore"):
        mixed = (h + np.uint64(salt)) * _MULT
    return (mixed >> np.uint64(64 - bits)).astype(np.int64)


def _group(idx: Ints) -> tuple[Ints, Floats]:
    """Log-counts of the bucket indices, L2-normalised."""
    if idx.size == 0:
        return idx, np.zeros(0)
    uniq, counts = np.unique(idx, return_counts=True)
    vals = np.log1p(counts.astype(np.float64))
    return uniq, vals / math.sqrt(float(vals @ vals))


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return text[:head] + " " + text[-(limit - head) :]


def _word_ngrams(text: str, n: int, salt: int, bits: int) -> Ints:
    words = _WORD.findall(text.lower())
    if not words:
        return np.zeros(0, dtype=np.int64)
    h = _word_hashes(words)
    parts = [_bucket(h, salt, bits)]
    with np.errstate(over="ignore"):
        g = h
        for k in range(2, n + 1):
            if len(h) < k:
                break
            g = g[:-1] * _BYTE_P + h[k - 1 :]
            parts.append(_bucket(g, salt + k, bits))
    return np.concatenate(parts)


def _char_ngrams(text: str, lo: int, hi: int, salt: int, bits: int) -> Ints:
    b = np.frombuffer(" ".join(text.lower().split()).encode("utf-8"), dtype=np.uint8).astype(np.uint64) + 1
    parts = []
    with np.errstate(over="ignore"):
        g = b.copy()
        for k in range(2, hi + 1):
            if len(b) < k:
                break
            g = g[:-1] * _BYTE_P + b[k - 1 :]
            if k >= lo:
                parts.append(_bucket(g, salt + k, bits))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _answer_key(s: Sample) -> str | None:
    if s.answer is not None:
        return s.answer.strip() or None
    return extract_text(s.text[-200:]) if s.text else None


def dense_features(prompt: str, samples: Sequence[Sample], config: FeatureConfig | None = None) -> Floats:
    """The dense feature vector (order: :data:`DENSE`), unscaled; columns of groups ``config``
    leaves out are 0."""
    out = _dense(prompt, samples)
    if config is not None and len(config.groups) < len(GROUPS):
        out *= dense_mask(config.groups)
    return out


def _dense(prompt: str, samples: Sequence[Sample]) -> Floats:
    s0 = samples[0] if samples else Sample("")
    text = s0.text or s0.answer or ""
    lower = text.lower()
    words = len(text.split())
    nums = _NUMBER.findall(text)
    pnums = set(_NUMBER.findall(prompt))
    stripped = text.rstrip(" .`}\n\"'")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    tokens = lower.split()
    rep = 1.0 - len(set(tokens)) / len(tokens) if tokens else 0.0
    f = [
        math.log1p(len(text)),
        math.log1p(words),
        math.log1p(len(prompt)),
        math.log1p(len(text)) - math.log1p(len(prompt)),
        1.0 if not text.strip() else 0.0,
        math.log1p(len(nums)),
        1.0 if stripped and (stripped[-1].isdigit()) else 0.0,
        (sum(1 for x in nums if x in pnums) / len(nums)) if nums else 0.0,
        math.log1p(len(pnums)),
        math.log1p(len(_HEDGES.findall(lower))),
        math.log1p(len(_REFUSALS.findall(lower))),
        math.log1p(text.count("?")),
        1.0 if "```" in text or "def " in text else 0.0,
        1.0 if "{" in text and '"' in text and ":" in text else 0.0,
        1.0 if "\\boxed" in text else 0.0,
        math.log1p(len(lines)),
        math.log1p(len(lines[-1])) if lines else 0.0,
        rep,
    ]
    lps = s0.logprobs
    if lps:
        a = np.asarray(lps, dtype=np.float64)
        margin = 0.0
        if s0.top_logprobs:
            gaps = []
            for alt in s0.top_logprobs:
                vals = sorted(alt.values(), reverse=True)
                if len(vals) >= 2:
                    gaps.append(vals[0] - vals[1])
            margin = float(np.mean(gaps)) if gaps else 0.0
        f += [1.0, float(a.mean()), float(a.min()), float(np.percentile(a, 10)), margin]
    else:
        f += [0.0, 0.0, 0.0, 0.0, 0.0]
    if len(samples) > 1:
        keys = [_answer_key(s) for s in samples]
        answered = [k for k in keys if k is not None]
        k0 = keys[0]
        share = (sum(1 for k in answered if k == k0) / len(keys)) if k0 is not None else 0.0
        f += [1.0, share, len(set(answered)) / len(keys)]
    else:
        f += [0.0, 0.0, 0.0]
    return np.asarray(f, dtype=np.float64)


def hashed_features(prompt: str, samples: Sequence[Sample], config: FeatureConfig) -> tuple[Ints, Floats]:
    """Sparse hashed features of the prompt and the first sample's text (the chosen groups)."""
    s0 = samples[0] if samples else Sample("")
    answer = _clip(s0.text or s0.answer or "", config.answer_chars)
    question = _clip(prompt, config.prompt_chars)
    bits = config.bits
    groups = []
    if "prompt" in config.groups:
        groups.append(_group(_word_ngrams(question, config.word_ngrams, 101, bits)))
    if "answer" in config.groups:
        groups.append(_group(_word_ngrams(answer, config.word_ngrams, 202, bits)))
        tail = answer[-config.char_tail :] if config.char_tail else ""
        groups.append(_group(_char_ngrams(tail, *config.char_ngrams, 303, bits)))
    if not groups:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    idx = np.concatenate([g[0] for g in groups])
    val = np.concatenate([g[1] for g in groups])
    return idx, val


@dataclass
class Rows:
    """A CSR matrix of feature rows (hashed columns, then dense columns)."""

    indptr: Ints
    indices: Ints
    data: Floats
    width: int

    @property
    def n(self) -> int:
        return len(self.indptr) - 1

    @property
    def row_ids(self) -> Ints:
        return np.repeat(np.arange(self.n), np.diff(self.indptr))

    def dot(self, w: Floats, row_ids: Ints | None = None) -> Floats:
        rows = self.row_ids if row_ids is None else row_ids
        out: Floats = np.bincount(rows, weights=self.data * w[self.indices], minlength=self.n).astype(
            np.float64
        )
        return out

    def tdot(self, r: Floats, row_ids: Ints | None = None) -> Floats:
        rows = self.row_ids if row_ids is None else row_ids
        out: Floats = np.bincount(self.indices, weights=self.data * r[rows], minlength=self.width).astype(
            np.float64
        )
        return out

    def take(self, which: Ints) -> Rows:
        starts, ends = self.indptr[which], self.indptr[which + 1]
        lengths = ends - starts
        gather = (
            np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
            if len(which)
            else np.zeros(0, dtype=np.int64)
        )
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return Rows(indptr, self.indices[gather], self.data[gather], self.width)


def stack(
    hashed: Sequence[tuple[Ints, Floats]], dense: Floats, mean: Floats, std: Floats, config: FeatureConfig
) -> Rows:
    """CSR rows from hashed parts and a dense matrix (standardised with ``mean``/``std``); the
    dense block may be wider than :data:`DENSE` (extra inputs such as partner agreement)."""
    z = (dense - mean) / std
    d = z.shape[1]
    dense_idx = np.arange(config.hashed, config.hashed + d, dtype=np.int64)
    indices, data, indptr = [], [], [0]
    for (idx, val), row in zip(hashed, z, strict=True):
        indices.append(idx)
        indices.append(dense_idx)
        data.append(val)
        data.append(row)
        indptr.append(indptr[-1] + len(idx) + d)
    return Rows(
        np.asarray(indptr, dtype=np.int64),
        np.concatenate(indices).astype(np.int64) if indices else np.zeros(0, dtype=np.int64),
        np.concatenate(data) if data else np.zeros(0),
        config.hashed + d,
    )


__all__ = [
    "DENSE",
    "GROUPS",
    "FeatureConfig",
    "Rows",
    "dense_features",
    "dense_mask",
    "hashed_features",
    "stack",
]
