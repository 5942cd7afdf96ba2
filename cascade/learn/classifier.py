"""Trained confidence classifier: P(the answer is right) from features of the prompt and answer.

Training (:func:`train`, or ``cascade train-scorer``) fits an L2-regularised logistic regression in
numpy (L-BFGS on a sparse hashed design, see :mod:`cascade.learn.features`) on one part of the
labelled examples, picks the regularisation on a held-out calibration part, then calibrates the
raw score there (Platt scaling or isotonic regression). The artifact is a versioned JSON file
(``cascade-classifier/1``; weights base64-encoded float32, no pickle) that a policy references::

    scorer: {kind: classifier, path: scorers/llama-8b.json}

Scoring one completion takes well under a millisecond plus feature extraction.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cascade import outcomes
from cascade.errors import ConfigurationError
from cascade.files import write_text
from cascade.learn import metrics
from cascade.learn.features import (
    DENSE,
    FeatureConfig,
    Floats,
    Ints,
    Rows,
    dense_features,
    hashed_features,
    stack,
)
from cascade.types import Sample

FORMAT = "cascade-classifier/1"
FEATURE_VERSION = 1
"""What the features mean; bump it when they change: an artifact of another version is refused."""


def trained_for(
    model: str, data: outcomes.Outcomes | None = None, answer: str | None = None
) -> dict[str, Any]:
    """What an artifact is trained for, kept in its ``meta``: the model whose answers (or prompts)
    it learned, the answer kind (a verifier's extractor) and a fingerprint of the data file."""
    out: dict[str, Any] = {"model": model}
    if answer is not None:
        out["answer"] = answer
    if data is not None:
        import hashlib

        try:
            out["data_sha256"] = hashlib.sha256(Path(data.path).read_bytes()).hexdigest()[:16]
            out["data"] = Path(data.path).name
        except OSError:  # data built in memory: nothing to fingerprint
            pass
    return out


def check_trained_for(clf: Classifier, source: str, *, model: str | None, answer: str | None = None) -> None:
    """Refuse an artifact used for another model (or answer kind) than it was trained for
    (:class:`ConfigurationError`); an artifact that does not say is taken as it is."""
    mine = clf.meta.get("model")
    if model is not None and isinstance(mine, str) and mine != model:
        raise ConfigurationError(
            f"{source}: trained for model {mine!r}, used on a tier of model {model!r}; train one for"
            f" {model!r} (cascade train-scorer --model {model})"
        )
    kind = clf.meta.get("answer")
    if answer is not None and isinstance(kind, str) and kind != answer:
        raise ConfigurationError(
            f"{source}: trained with answers extracted as {kind!r}, the policy asks for {answer!r};"
            " retrain or set the same `answer`"
        )


Method = Literal["platt", "isotonic"]
Choice = Literal["platt", "isotonic", "auto"]


# -- data -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled answer: the prompt, the model's samples (the first is the answer), the label."""

    prompt: str
    samples: tuple[Sample, ...]
    label: float
    id: str = ""
    split: str | None = None
    extra: tuple[float, ...] = ()  # extra inputs (a verifier's partner agreement, other scores...)


def require_model(data: outcomes.Outcomes, model: str) -> None:
    """Raise a :class:`ConfigurationError` (with a suggestion) when ``model`` is not in ``data``."""
    if model not in data.models:
        from cascade.registry import suggest

        raise ConfigurationError(
            f"{data.path.name}: model {model!r} is not in the file{suggest(model, data.models)}"
        )


def examples_from_outcomes(
    data: outcomes.Outcomes, model: str, *, samples: int = 1, positive_at: float = 0.5
) -> list[Example]:
    """Labelled examples of ``model`` from a recorded-outcomes file (records without a label skipped).

    ``samples`` > 1 keeps that many samples per record, so agreement features are computed as a
    classifier scorer drawing ``samples`` would see them. A quality >= ``positive_at`` is correct.
    """
    require_model(data, model)
    out = []
    for r in data.records:
        recorded = r.responses.get(model)
        if not recorded or recorded[0].quality is None:
            continue
        kept = tuple(Sample(s.text or "", answer=s.answer, variant=s.variant) for s in recorded[:samples])
        out.append(Example(r.prompt, kept, 1.0 if recorded[0].quality >= positive_at else 0.0, r.id, r.split))
    return out


# -- calibration ------------------------------------------------------------------------------


def _sigmoid(z: Floats) -> Floats:
    out: Floats = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def fit_platt(z: Floats, y: Floats) -> tuple[float, float]:
    """Platt scaling: ``sigmoid(a * z + b)`` fit by damped Newton steps on Platt's smoothed targets."""
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    t = np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(a: float, b: float) -> float:
        u = a * z + b
        return float(np.sum(np.logaddexp(0.0, u) - t * u))

    a, b = 1.0, 0.0
    f = loss(a, b)
    for _ in range(100):
        p = _sigmoid(a * z + b)
        g = np.array([np.sum((p - t) * z), np.sum(p - t)])
        w = p * (1 - p) + 1e-12
        h = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        scale = 1.0
        while scale > 1e-8:
            na, nb = a - scale * float(step[0]), b - scale * float(step[1])
            nf = loss(na, nb)
            if nf <= f:
                break
            scale /= 2
        else:
            break
        converged = f - nf < 1e-10 * max(1.0, abs(f))
        a, b, f = na, nb, nf
        if converged:
            break
    return a, b


def fit_isotonic(z: Floats, y: Floats) -> tuple[list[float], list[float]]:
    """Isotonic regression (pool adjacent violators): block centres and their accuracies."""
    order = np.argsort(z, kind="mergesort")
    xs, ys = z[order], y[order]
    values: list[float] = []
    weights: list[float] = []
    sums: list[float] = []
    for xi, yi in zip(xs.tolist(), ys.tolist(), strict=True):
        values.append(yi)
        weights.append(1.0)
        sums.append(xi)
        while len(values) > 1 and values[-2] >= values[-1]:
            v, w, s = values.pop(), weights.pop(), sums.pop()
            w0 = weights[-1]
            values[-1] = (values[-1] * w0 + v * w) / (w0 + w)
            sums[-1] += s
            weights[-1] = w0 + w
    centres = [s / w for s, w in zip(sums, weights, strict=True)]
    return centres, values


@dataclass(frozen=True, slots=True)
class Calibration:
    """Maps the raw logit to a probability."""

    method: Method
    params: dict[str, Any]

    @classmethod
    def fit(cls, method: Method, z: Floats, y: Floats) -> Calibration:
        if method == "platt":
            a, b = fit_platt(z, y)
            return cls("platt", {"a": a, "b": b})
        x, v = fit_isotonic(z, y)
        return cls("isotonic", {"x": x, "y": v})

    @classmethod
    def choose(cls, z: Floats, y: Floats, folds: int = 5, seed: int = 0) -> Method:
        """The method with the lower cross-validated Brier score on ``(z, y)``."""
        order = np.random.default_rng(seed).permutation(len(z))
        errors: dict[Method, float] = {"platt": 0.0, "isotonic": 0.0}
        for k in range(folds):
            held = order[k::folds]
            kept = np.setdiff1d(order, held)
            if len(held) == 0 or np.unique(y[kept]).size < 2:
                continue
            for method in errors:
                p = cls.fit(method, z[kept], y[kept])(z[held])
                errors[method] += float(np.sum((p - y[held]) ** 2))
        return "platt" if errors["platt"] <= errors["isotonic"] else "isotonic"

    def __call__(self, z: Floats) -> Floats:
        if self.method == "platt":
            return _sigmoid(self.params["a"] * z + self.params["b"])
        out: Floats = np.interp(z, self.params["x"], self.params["y"])
        return out


# -- logistic regression ----------------------------------------------------------------------


def _dot(a: Floats, b: Floats) -> float:
    # einsum, not BLAS: a threaded BLAS dot is many times slower on a busy small machine
    return float(np.einsum("i,i->", a, b))


def _lbfgs(
    fg: Callable[[Floats], tuple[float, Floats]],
    x0: Floats,
    max_iter: int = 200,
    memory: int = 10,
    tol: float = 1e-5,
) -> Floats:
    """Minimise a smooth convex function (limited-memory BFGS with Armijo backtracking).

    Vectors are updated in place: large temporaries are slow to allocate (each one is a fresh
    mmap), and they dominate the cost of a step when the design is sparse.
    """
    d_len = len(x0)
    x = x0.copy()
    f, g = fg(x)
    ss = np.zeros((memory, d_len))
    ys = np.zeros((memory, d_len))
    rhos = np.zeros(memory)
    count = 0
    head = 0
    q = np.empty(d_len)
    tmp = np.empty(d_len)
    xn = np.empty(d_len)
    alphas = np.zeros(memory)
    for _ in range(max_iter):
        np.copyto(q, g)
        slots = [(head - 1 - i) % memory for i in range(count)]  # newest first
        for j in slots:
            alphas[j] = rhos[j] * _dot(ss[j], q)
            np.multiply(ys[j], alphas[j], out=tmp)
            q -= tmp
        if count:
            newest = slots[0]
            q *= _dot(ss[newest], ys[newest]) / _dot(ys[newest], ys[newest])
        else:
            q /= max(1.0, math.sqrt(_dot(g, g)))
        for j in reversed(slots):
            beta = rhos[j] * _dot(ys[j], q)
            np.multiply(ss[j], alphas[j] - beta, out=tmp)
            q += tmp
        q *= -1.0  # the search direction
        gd = _dot(g, q)
        if gd >= 0:
            np.multiply(g, -1.0, out=q)
            gd = -_dot(g, g)
            count = 0
        t = 1.0
        while True:
            np.multiply(q, t, out=xn)
            xn += x
            fn, gn = fg(xn)
            if fn <= f + 1e-4 * t * gd or t < 1e-12:
                break
            t *= 0.5
        s_new, y_new = ss[head], ys[head]
        np.subtract(xn, x, out=s_new)
        np.subtract(gn, g, out=y_new)
        sy = _dot(s_new, y_new)
        if sy > 1e-12:
            rhos[head] = 1.0 / sy
            head = (head + 1) % memory
            count = min(count + 1, memory)
        done = abs(f - fn) <= tol * max(1.0, abs(f))
        x, xn = xn, x
        f, g = fn, gn
        if done or float(np.abs(g).max()) < tol:
            break
    return x


class _Design:
    """``rows`` prepared for repeated products: CSR segment sums and a CSC copy for the transpose.

    The products run in float32: they are memory-bound gathers, and halving the bytes of the
    values halves their time; the optimiser itself stays in float64. Indices stay ``intp`` (numpy
    converts any other index type on every gather) and are valid by construction, so the gathers
    skip bounds checks (``mode="clip"``): together 3-4x faster than int32 indices.
    """

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        self.width = rows.width
        lengths = np.diff(rows.indptr)
        if not bool((lengths > 0).all()):
            raise ValueError("every row needs at least one feature")  # the dense block guarantees it
        row_ids = rows.row_ids
        self.indices = rows.indices.astype(np.intp)
        self.data = rows.data.astype(np.float32)
        self.starts = rows.indptr[:-1]
        # a stable sort of 16-bit keys is a radix sort: much faster on the usual <= 65,535 columns
        keys = rows.indices.astype(np.uint16) if rows.width <= 0xFFFF else rows.indices
        order = np.argsort(keys, kind="stable")
        self.col_ids, self.col_starts = np.unique(rows.indices[order], return_index=True)
        self.csc_rows = row_ids[order].astype(np.intp)
        self.csc_data = self.data[order]
        self._buf = np.empty(len(rows.data), dtype=np.float32)

    def dot(self, w: Floats) -> Floats:
        np.take(w.astype(np.float32), self.indices, out=self._buf, mode="clip")
        self._buf *= self.data
        out: Floats = np.add.reduceat(self._buf, self.starts).astype(np.float64)
        return out

    def tdot(self, v: Floats, out: Floats) -> Floats:
        out[:] = 0.0
        if len(self.col_ids):
            np.take(v.astype(np.float32), self.csc_rows, out=self._buf, mode="clip")
            self._buf *= self.csc_data
            out[self.col_ids] = np.add.reduceat(self._buf, self.col_starts)
        return out


def fit_logistic(
    rows: Rows, y: Floats, lam: float, x0: Floats | None = None, *, compact: bool = True, tol: float = 1e-5
) -> Floats:
    """L2-regularised logistic regression; returns ``[w..., bias]`` (the bias is not penalised).

    With ``compact`` only the columns some row uses are optimised (the others' optimum is 0).
    """
    n, full_width = rows.n, rows.width
    if compact:
        active = np.unique(rows.indices)
        rows = Rows(rows.indptr, np.searchsorted(active, rows.indices), rows.data, len(active))
    design = _Design(rows)
    width = rows.width
    buf = np.empty(width)

    def fg(x: Floats) -> tuple[float, Floats]:
        w, b = x[:width], x[width]
        z = design.dot(w) + b
        loss = float(np.mean(np.logaddexp(0.0, z) - y * z)) + 0.5 * lam * _dot(w, w)
        r = (_sigmoid(z) - y) / n
        grad = np.empty_like(x)
        g_w = design.tdot(r, grad[:width])
        np.multiply(w, lam, out=buf)
        g_w += buf
        grad[width] = r.sum()
        return loss, grad

    if not compact:
        return _lbfgs(fg, np.zeros(width + 1) if x0 is None else x0, tol=tol)
    start = np.zeros(width + 1)
    if x0 is not None:
        start[:width] = x0[active]
        start[width] = x0[-1]
    solved = _lbfgs(fg, start, tol=tol)
    out = np.zeros(full_width + 1)
    out[active] = solved[:width]
    out[-1] = solved[width]
    return out


# -- the trained classifier -------------------------------------------------------------------


def _encode(a: Floats) -> str:
    return base64.b64encode(a.astype("<f4").tobytes()).decode("ascii")


def _decode(s: str) -> Floats:
    return np.frombuffer(base64.b64decode(s), dtype="<f4").astype(np.float64)


@dataclass
class Classifier:
    """A trained, calibrated classifier (what an artifact file holds)."""

    config: FeatureConfig
    mean: Floats
    std: Floats
    weights: Floats
    bias: float
    calibration: Calibration
    samples: int = 1
    meta: dict[str, Any] = field(default_factory=dict)
    extra: tuple[str, ...] = ()  # names of extra inputs after the dense features
    kind: str = "classifier"  # what the artifact is for: classifier | verifier | prompt
    # cross-fitting (issue 20 §2): the fold models; a prompt is scored by the one that did not see
    # its fold (:func:`fold_of`), so deployed scores follow the out-of-fold scores thresholds were
    # tuned on. The fields above are then the model fit on every record (``predict_rows`` uses it).
    members: tuple[Classifier, ...] = ()

    @property
    def width(self) -> int:
        return self.config.width + len(self.extra)

    def dense(self, prompt: str, samples: Sequence[Sample], extra: Sequence[float] = ()) -> Floats:
        if len(extra) != len(self.extra):
            raise ValueError(f"{len(extra)} extra inputs, the classifier takes {len(self.extra)}")
        d = dense_features(prompt, samples, self.config)
        return np.concatenate([d, np.asarray(extra, dtype=np.float64)]) if self.extra else d

    def rows(
        self, items: Iterable[tuple[str, Sequence[Sample]]], extras: Sequence[Sequence[float]] | None = None
    ) -> Rows:
        hashed, dense = [], []
        for i, (prompt, samples) in enumerate(items):
            hashed.append(hashed_features(prompt, samples, self.config))
            dense.append(self.dense(prompt, samples, extras[i] if extras is not None else ()))
        mat = np.vstack(dense) if dense else np.zeros((0, len(DENSE) + len(self.extra)))
        return stack(hashed, mat, self.mean, self.std, self.config)

    def logits(self, rows: Rows) -> Floats:
        return rows.dot(self.weights) + self.bias

    def predict_rows(self, rows: Rows) -> Floats:
        return np.clip(self.calibration(self.logits(rows)), 0.0, 1.0)

    def predict(
        self, prompt: str, samples: Sequence[Sample], extra: Sequence[float] = ()
    ) -> tuple[float, float]:
        """``(probability, raw logit)`` for one answer (``extra``: the extra inputs, in order)."""
        if self.members:
            return self.members[fold_of(prompt, len(self.members))].predict(prompt, samples, extra)
        idx, val = hashed_features(prompt, samples, self.config)
        z_dense = (self.dense(prompt, samples, extra) - self.mean) / self.std
        logit = (
            float(val @ self.weights[idx]) + float(z_dense @ self.weights[self.config.hashed :]) + self.bias
        )
        p = float(self.calibration(np.array([logit]))[0])
        return min(max(p, 0.0), 1.0), logit

    # -- artifact -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": self.kind,
            "feature_version": FEATURE_VERSION,
            "meta": self.meta,
            "samples": self.samples,
            "features": self.config.to_dict(),
            "extra": list(self.extra),
            "dense": {
                "names": [*DENSE, *self.extra],
                "mean": self.mean.tolist(),
                "std": self.std.tolist(),
            },
            "weights": {"dtype": "float32-le", "encoding": "base64", "data": _encode(self.weights)},
            "bias": self.bias,
            "calibration": {"method": self.calibration.method, **self.calibration.params},
            **({"cross_fit": [m.to_json() for m in self.members]} if self.members else {}),
        }

    def save(self, path: str | Path) -> None:
        """Write the artifact atomically (a policy may name it: never left half written)."""
        write_text(path, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def from_json(cls, d: Any, source: str = "artifact", kind: str | None = None) -> Classifier:
        """The classifier an artifact holds; every size is checked here, so a bad file fails when
        the policy is built, not on every request. ``kind``: the artifact kind the caller needs."""
        if not isinstance(d, dict):
            raise ConfigurationError(
                f"{source}: not a {FORMAT} artifact (a JSON {type(d).__name__}, expected an object)"
            )
        if d.get("format") != FORMAT:
            raise ConfigurationError(f"{source}: not a {FORMAT} artifact (format {d.get('format')!r})")
        has = str(d.get("kind", "classifier"))
        if kind is not None and has != kind:
            raise ConfigurationError(f"{source}: a {has} artifact, not a {kind} one")
        version = d.get("feature_version", FEATURE_VERSION)  # artifacts from before it was written: 1
        if version != FEATURE_VERSION:
            raise ConfigurationError(
                f"{source}: trained on feature version {version!r}, this cascade computes version"
                f" {FEATURE_VERSION}; retrain"
            )
        try:
            config = FeatureConfig.from_dict(d["features"])
            extra = tuple(str(x) for x in d.get("extra") or ())
            names = [*DENSE, *extra]
            if list(d["dense"]["names"]) != names:
                raise ConfigurationError(
                    f"{source}: dense features differ from this version of cascade; retrain"
                )
            mean = np.asarray(d["dense"]["mean"], dtype=np.float64)
            std = np.asarray(d["dense"]["std"], dtype=np.float64)
            if mean.shape != (len(names),) or std.shape != (len(names),):
                raise ConfigurationError(
                    f"{source}: {mean.size} feature means and {std.size} scales, expected {len(names)} each"
                )
            if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
                raise ConfigurationError(f"{source}: feature scales must be finite and positive")
            weights = _decode(d["weights"]["data"])
            width = config.width + len(extra)
            if len(weights) != width:
                raise ConfigurationError(f"{source}: {len(weights)} weights, expected {width}")
            cal = dict(d["calibration"])
            method = cal.pop("method")
            if method not in ("platt", "isotonic"):
                raise ConfigurationError(f"{source}: unknown calibration {method!r}")
            if method == "platt":
                cal = {"a": float(cal["a"]), "b": float(cal["b"])}
            elif len(cal["x"]) != len(cal["y"]) or not cal["x"]:
                raise ConfigurationError(f"{source}: isotonic calibration needs equal, non-empty x and y")
            members = _members(d.get("cross_fit"), source, has, config, extra)
            return cls(
                members=members,
                config=config,
                mean=mean,
                std=std,
                weights=weights,
                bias=float(d["bias"]),
                calibration=Calibration(method, cal),
                samples=int(d.get("samples", 1)),
                meta=dict(d.get("meta") or {}),
                extra=extra,
                kind=has,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ConfigurationError(f"{source}: malformed classifier artifact ({err!r})") from None

    def cross_fit(self, folds: Sequence[Classifier]) -> Classifier:
        """This model (fit on every record) scoring each prompt with its fold's model instead."""
        from dataclasses import replace

        return replace(self, members=tuple(folds))

    @classmethod
    def load(cls, path: str | Path, kind: str | None = None) -> Classifier:
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigurationError(f"{p}: cannot read classifier artifact: {err.strerror}") from None
        except ValueError as err:
            raise ConfigurationError(f"{p}: classifier artifact is not JSON ({err})") from None
        return cls.from_json(d, str(p), kind)


def fold_of(prompt: str, folds: int) -> int:
    """The cross-fitting fold of a prompt: a stable hash of its text, the same in training (which
    model scores a record out of fold) and in use (which member scores a request)."""
    digest = hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % folds


def _members(
    raw: Any, source: str, kind: str, config: FeatureConfig, extra: tuple[str, ...]
) -> tuple[Classifier, ...]:
    """The cross-fit members of an artifact, each checked like the artifact itself."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) < 2:
        raise ConfigurationError(f"{source}: `cross_fit` must be a list of at least two fold models")
    out = []
    for i, m in enumerate(raw):
        if isinstance(m, dict) and "cross_fit" in m:
            raise ConfigurationError(f"{source}: cross-fit member {i} is itself cross-fit")
        clf = Classifier.from_json(m, f"{source} (cross-fit member {i})", kind)
        if clf.config != config or clf.extra != extra:
            raise ConfigurationError(f"{source}: cross-fit member {i} has other features than the artifact")
        out.append(clf)
    return tuple(out)


# -- training ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """Held-out figures of a trained classifier."""

    n_train: int
    folds: int
    n_test: int
    base_rate: float
    auroc: float
    ece: float
    brier: float
    lam: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def _split(n: int, share: float, seed: int) -> tuple[Ints, Ints]:
    perm = np.random.default_rng(seed).permutation(n)
    cut = max(1, min(n - 1, round(n * (1 - share))))
    return np.sort(perm[:cut]), np.sort(perm[cut:])


def _drop_common(rows: Rows, hashed: int, max_df: float) -> Rows:
    """``rows`` without the hashed columns present in more than ``max_df`` of the rows.

    Such columns (a prompt template's n-grams, say) are nearly constant, so they carry almost no
    information, yet they are a large share of the work. Dense columns are kept.
    """
    counts = np.bincount(rows.indices, minlength=rows.width)
    common = counts > max_df * rows.n
    common[hashed:] = False
    keep = ~common[rows.indices]
    if keep.all():
        return rows
    kept_per_row = np.add.reduceat(keep.astype(np.int64), rows.indptr[:-1])
    indptr = np.concatenate([[0], np.cumsum(kept_per_row)]).astype(np.int64)
    return Rows(indptr, rows.indices[keep], rows.data[keep], rows.width)


def train(
    examples: Sequence[Example],
    *,
    config: FeatureConfig | None = None,
    calibration: Choice = "auto",
    lams: Sequence[float] = (1e-3, 2e-4, 4e-5),
    folds: int = 3,
    max_df: float = 0.9,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    extra: Sequence[str] = (),
    kind: str = "classifier",
) -> Classifier:
    """Fit a calibrated classifier on ``examples``.

    The L2 strength is chosen on a 70/30 split (held-out log loss after Platt scaling); the
    calibration map is fit on cross-fitted (out-of-fold, ``folds``) logits, so every example is
    held-out data for calibration; the final weights are the mean of the fold models'. Hashed
    columns present in more than ``max_df`` of the examples are left out (weight 0).
    ``calibration="auto"`` picks Platt or isotonic by cross-validated Brier score on those logits.
    ``extra`` names the examples' extra inputs (``Example.extra``), appended to the dense block.
    """
    config = config or FeatureConfig()
    if len(examples) < 20:
        raise ConfigurationError(f"need at least 20 labelled examples to train, got {len(examples)}")
    y = np.array([e.label for e in examples], dtype=np.float64)
    if y.min() == y.max():
        raise ConfigurationError("every training label is the same: nothing to learn")
    n = len(examples)
    bad = next((e for e in examples if len(e.extra) != len(extra)), None)
    if bad is not None:
        raise ConfigurationError(f"example {bad.id!r}: {len(bad.extra)} extra inputs, expected {len(extra)}")
    hashed = [hashed_features(e.prompt, e.samples, config) for e in examples]
    dense = np.vstack(
        [np.concatenate([dense_features(e.prompt, e.samples, config), e.extra]) for e in examples]
    )
    mean = dense.mean(axis=0)
    std = dense.std(axis=0)
    std[std < 1e-9] = 1.0
    full = _drop_common(stack(hashed, dense, mean, std, config), config.hashed, max_df)
    active = np.unique(full.indices)  # fit only the columns the data uses
    rows = Rows(full.indptr, np.searchsorted(active, full.indices), full.data, len(active))
    width = len(active)

    def logits(x: Floats, part: Rows) -> Floats:
        out: Floats = part.dot(x[:width]) + x[width]
        return out

    def fit(part: Rows, labels: Floats, lam: float, start: Floats | None, tol: float = 1e-5) -> Floats:
        return fit_logistic(part, labels, lam, start, compact=False, tol=tol)

    # 1. regularisation strength on one split
    fit_idx, val_idx = _split(n, 0.3, seed)
    fit_rows, val_rows = rows.take(fit_idx), rows.take(val_idx)
    best: tuple[float, float] | None = None
    x: Floats | None = None
    for lam in sorted(lams, reverse=True):  # strongest first, warm-starting the next
        x = fit(fit_rows, y[fit_idx], lam, x)
        z = logits(x, val_rows)
        a, b = fit_platt(z, y[val_idx])
        p = np.clip(_sigmoid(a * z + b), 1e-6, 1 - 1e-6)
        loss = float(-np.mean(y[val_idx] * np.log(p) + (1 - y[val_idx]) * np.log(1 - p)))
        if best is None or loss < best[0]:
            best = (loss, lam)
    assert best is not None
    lam = best[1]
    # 2. out-of-fold logits for calibration
    folds = max(2, folds)
    order = np.random.default_rng(seed + 1).permutation(n)
    oof = np.empty(n)
    x_all = np.zeros(width + 1)
    for k in range(folds):
        held = np.sort(order[k::folds])
        kept = np.setdiff1d(np.arange(n), held)
        # cold start: a start fit on other rows would leak them into this fold's held-out logits
        xk = fit(rows.take(kept), y[kept], lam, None)
        oof[held] = logits(xk, rows.take(held))
        x_all += xk / folds
    method: Method = Calibration.choose(oof, y, seed=seed) if calibration == "auto" else calibration
    cal = Calibration.fit(method, oof, y)
    # 3. the final model averages the fold models (a linear model: the mean logit), so the logits it
    # produces are distributed like the out-of-fold logits the calibration was fit on
    weights = np.zeros(config.width + len(extra))
    weights[active] = x_all[:width]
    info = dict(meta or {})
    info.update(lam=lam, n_train=n, folds=folds, base_rate=float(y.mean()))
    samples = max((len(e.samples) for e in examples), default=1)
    return Classifier(config, mean, std, weights, float(x_all[width]), cal, samples, info, tuple(extra), kind)


def evaluate(clf: Classifier, examples: Sequence[Example]) -> tuple[Floats, Floats]:
    """``(probabilities, labels)`` of ``clf`` on ``examples``."""
    rows = clf.rows(((e.prompt, e.samples) for e in examples), [e.extra for e in examples])
    return clf.predict_rows(rows), np.array([e.label for e in examples], dtype=np.float64)


def split_examples(
    examples: Sequence[Example], test_share: float = 0.3, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """The file's own train/test split where records carry one; else a seeded random split."""
    splits = {e.split for e in examples}
    if {"train", "test"} <= splits:
        return [e for e in examples if e.split == "train"], [e for e in examples if e.split == "test"]
    train_idx, test_idx = _split(len(examples), test_share, seed)
    return [examples[i] for i in train_idx], [examples[i] for i in test_idx]


def train_and_report(
    train_set: Sequence[Example],
    test_set: Sequence[Example],
    **kwargs: Any,
) -> tuple[Classifier, Report]:
    """Train on ``train_set`` and measure AUROC / ECE / Brier on ``test_set``."""
    started = time.perf_counter()
    clf = train(train_set, **kwargs)
    seconds = time.perf_counter() - started
    p, y = evaluate(clf, test_set)
    report = Report(
        n_train=int(clf.meta["n_train"]),
        folds=int(clf.meta["folds"]),
        n_test=len(test_set),
        base_rate=float(y.mean()) if len(y) else math.nan,
        auroc=metrics.auroc(p, y),
        ece=metrics.ece(p, y),
        brier=metrics.brier(p, y),
        lam=float(clf.meta["lam"]),
        seconds=seconds,
    )
    clf.meta["held_out"] = {k: v for k, v in report.as_dict().items() if k != "seconds"}
    clf.meta["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    return clf, report


__all__ = [
    "FEATURE_VERSION",
    "FORMAT",
    "Calibration",
    "Classifier",
    "Example",
    "Report",
    "check_trained_for",
    "evaluate",
    "examples_from_outcomes",
    "fit_isotonic",
    "fit_logistic",
    "fit_platt",
    "fold_of",
    "require_model",
    "split_examples",
    "train",
    "train_and_report",
    "trained_for",
]
