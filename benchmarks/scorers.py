"""How good are the scorers? Measured on real recorded outputs, on data they were not tuned on.

For each scorer and data set: AUROC of the score for predicting that the returned answer is
correct, calibration error (ECE, 10 equal-width bins) where the score claims to be a probability
(the classifier), and the accept rate and accuracy among accepted answers at fixed thresholds.
The label is always the recorded quality of the sample the scorer chose to return. The
classifier is trained on the file's train split and reported on its test split (RouterBench
sets), or by 5-fold cross-validation where the file has no split (every answer scored by a model
that never saw it). Self-consistency and the judge have no trained parameters; their thresholds
are fixed, not tuned. AUROC intervals are 95% bootstrap intervals; "ECE floor" is the ECE a
perfectly calibrated scorer with the same confidences would show on this many examples (the
noise floor of the estimate).

    python benchmarks/scorers.py            # everything (a few minutes on 2 cores)
    python benchmarks/scorers.py --only ver  # one of: sc, judge, clf (classifier), ver (verifier)

Reads ``../shared/data`` (or ``$CASCADE_DATA``); exits with a message where it is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from data_path import default_data

from cascade import outcomes
from cascade.errors import ScorerError
from cascade.learn.classifier import (
    Example,
    evaluate,
    examples_from_outcomes,
    split_examples,
    train,
    train_and_report,
)
from cascade.money import Price, usd
from cascade.providers.replay import ReplayProvider
from cascade.request import Request
from cascade.scorers import metrics
from cascade.scorers.answers import ExtractorKind
from cascade.scorers.judge import JudgeScorer, ReplayJudgeProvider
from cascade.scorers.self_consistency import SelfConsistencyScorer, Source

ROOT = Path(__file__).resolve().parent.parent
DATA = default_data()
THRESHOLDS = (0.5, 0.7, 0.9)


@dataclass
class Row:
    scorer: str
    data: str
    model: str
    scores: np.ndarray
    labels: np.ndarray
    probability: bool = False
    note: str = ""

    def cells(self) -> list[str]:
        s, y = self.scores, self.labels
        auroc = metrics.auroc(s, y)
        lo, hi = bootstrap(metrics.auroc, s, y)
        auroc_cell = "—" if np.isnan(auroc) else f"{auroc:.3f} ({lo:.2f}–{hi:.2f})"
        ece = floor = "—"
        if self.probability:
            ece = f"{metrics.ece(s, y):.3f}"
            floor = f"{ece_floor(s):.3f}"
        out = [
            self.scorer,
            self.data,
            self.model,
            str(len(s)),
            f"{y.mean():.3f}",
            auroc_cell,
            ece,
            floor,
        ]
        for r in metrics.accept_table(s, y, THRESHOLDS):
            acc = "—" if r.accuracy is None else f"{r.accuracy:.3f}"
            out.append(f"{r.accept_rate:.0%} / {acc}")
        out.append(self.note)
        return out


def bootstrap(
    stat: Callable[[np.ndarray, np.ndarray], float], s: np.ndarray, y: np.ndarray, reps: int = 300
) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``stat`` over resampled (score, label) pairs."""
    rng = np.random.default_rng(0)
    values = []
    for _ in range(reps):
        i = rng.integers(0, len(s), len(s))
        v = stat(s[i], y[i])
        if not np.isnan(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def ece_floor(p: np.ndarray, reps: int = 300) -> float:
    """The ECE a perfectly calibrated scorer with these confidences would show at this n (labels
    drawn from the confidences): the sampling-noise floor of the ECE column."""
    rng = np.random.default_rng(0)
    return float(np.mean([metrics.ece(p, (rng.random(len(p)) < p).astype(float)) for _ in range(reps)]))


HEADER = (
    ["scorer", "data", "model", "n", "accuracy", "AUROC (95% CI)", "ECE", "ECE floor"]
    + [f"accept / acc @{t}" for t in THRESHOLDS]
    + ["note"]
)


def table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


# -- self-consistency -------------------------------------------------------------------------


def self_consistency(
    data: outcomes.Outcomes,
    model: str,
    scorer: SelfConsistencyScorer,
    *,
    variant: str | None = None,
    skip_missing: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every record through the real path: replay provider -> completion -> scorer."""
    provider = ReplayProvider(data, model, variant=variant)
    scores, labels = [], []
    for record in data.records:
        if model not in record.responses:
            continue
        if skip_missing and any(s.provider.model not in record.responses for s in scorer.sources):
            continue
        request = Request.of(record.prompt, metadata={"id": record.id})
        completion = provider.complete(request, scorer.samples)
        s = scorer.score(request, completion)
        chosen = completion.samples[s.chosen]
        if chosen.quality is None:
            continue
        scores.append(s.value)
        labels.append(1.0 if chosen.quality >= 0.5 else 0.0)
    return np.array(scores), np.array(labels)


def bench_self_consistency() -> list[Row]:
    rows = []
    for name in ("crux-o-samples", "crux-i-samples"):
        data = outcomes.load(DATA / f"{name}.jsonl.gz")
        for model in ("codellama-7b", "deepseek-instruct-6.7b", "codellama-13b"):
            for k in (5, 10):
                s, y = self_consistency(data, model, SelfConsistencyScorer("literal", k=k))
                rows.append(Row("self_consistency", name, model, s, y, note=f"k={k}, literal answers"))
    data = outcomes.load(DATA / "date-mot-3tier.jsonl.gz")
    date: ExtractorKind = "date"
    free = Price(usd(0), usd(0))
    for model in ("llama-2-13b-chat", "gpt-3.5-turbo-0613"):
        for k in (10, 20):  # llama-2's cot samples 11-20 repeat 1-10 in the source
            s, y = self_consistency(data, model, SelfConsistencyScorer(date, k=k), variant="cot")
            rows.append(Row("self_consistency", "date-mot-3tier", model, s, y, note=f"cot k={k}"))
        for k in (5, 10, 20):
            pot = Source(ReplayProvider(data, model, variant="pot"), k, free, name="pot")
            mix = SelfConsistencyScorer(date, k=k, sources=[pot])
            s, y = self_consistency(data, model, mix, variant="cot")
            rows.append(
                Row("self_consistency", "date-mot-3tier", model, s, y, note=f"cot {k} + pot {k} (MoT)")
            )
    # agreement between different cheap models (one greedy answer each): the tier's model votes
    # with the others, which the scorer calls itself (their cost is the scorer's cost)
    crowds = [
        (
            "gsm8k-zeroeval",
            "number",
            "Meta-Llama-3-8B-Instruct",
            ("Phi-3.5-mini-instruct", "Qwen2-7B-Instruct"),
        ),
        (
            "gsm8k-zeroeval",
            "number",
            "Meta-Llama-3-8B-Instruct",
            ("Phi-3.5-mini-instruct", "Qwen2-7B-Instruct", "gemma-2-2b-it", "Mistral-Nemo-Instruct-2407"),
        ),
        ("routerbench-arc", "choice", "mistral-7b-chat", ("WizardLM-13B-V1.2", "mixtral-8x7b-chat")),
    ]
    for name, kind, model, others in crowds:
        data = outcomes.load(DATA / f"{name}.jsonl.gz")
        sources = [Source(ReplayProvider(data, m), 1, free, name=m) for m in others]
        scorer = SelfConsistencyScorer(kind, k=1, sources=sources)  # type: ignore[arg-type]
        s, y = self_consistency(data, model, scorer, skip_missing=True)
        rows.append(
            Row("self_consistency", name, model, s, y, note=f"+ {len(others)} other models, 1 answer each")
        )
    return rows


# -- judge ------------------------------------------------------------------------------------


def bench_judge() -> tuple[list[Row], str]:
    path = DATA / "arena-judge.jsonl.gz"
    data = outcomes.load(path)
    judge = JudgeScorer(ReplayJudgeProvider(data, "gpt-4 (recorded)"), price=Price(usd(30), usd(60)))
    rows = []
    judged = parsed = failed = agree = labelled = no_text = 0
    all_s: list[float] = []
    all_y: list[float] = []
    for model in data.models:
        provider = ReplayProvider(data, model)
        scores, labels = [], []
        for record in data.records:
            samples = record.responses.get(model)
            if not samples or samples[0].judge is None:
                continue
            if not samples[0].text:
                no_text += 1  # the source kept a verdict but no answer text: nothing to judge
                continue
            request = Request.of(record.prompt, metadata={"id": record.id})
            completion = provider.complete(request, 1)
            judged += 1
            try:
                s = judge.score(request, completion)
            except ScorerError:
                failed += 1
                continue
            parsed += 1
            recorded = samples[0].judge.get("score_1_to_10")
            labelled += recorded is not None
            agree += recorded is not None and s.detail.get("rating") == recorded
            if samples[0].quality is None:
                continue  # parsed, but the source left it unlabelled
            scores.append(s.value)
            labels.append(1.0 if samples[0].quality >= 6 / 9 else 0.0)  # "good": GPT-4 rating >= 7
        all_s += scores
        all_y += labels
        if model in ("Mistral-7B-Instruct-v0.1", "Mixtral-8x7B-Instruct-v0.1", "gpt-3.5-turbo-1106"):
            rows.append(
                Row("judge (replayed GPT-4)", "arena-judge", model, np.array(scores), np.array(labels))
            )
    rows.append(
        Row(
            "judge (replayed GPT-4)",
            "arena-judge",
            f"all {len(data.models)} models",
            np.array(all_s),
            np.array(all_y),
            note="label: recorded rating >= 7 (same judge)",
        )
    )
    summary = (
        f"judge verdicts replayed for {judged} answers ({no_text} more have no answer text): "
        f"{parsed} parsed ({parsed / judged:.1%}), {failed} without a rating (escalated as scorer "
        f"errors); where the source recorded a score, the parsed rating equals it in {agree} of "
        f"{labelled} ({agree / max(labelled, 1):.1%}); {parsed - labelled} parsed verdicts "
        "(e.g. [[9.5]], 8/10) the source left unscored"
    )
    return rows, summary


# -- classifier -------------------------------------------------------------------------------


def cross_validated(
    examples: Sequence[Example], folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out probabilities for every example from ``folds`` classifiers (each trained without it)."""
    order = np.random.default_rng(seed).permutation(len(examples))
    p = np.empty(len(examples))
    for k in range(folds):
        held = set(order[k::folds].tolist())
        train_set = [e for i, e in enumerate(examples) if i not in held]
        test_idx = sorted(held)
        clf = train(train_set, seed=seed)
        p[test_idx], _ = evaluate(clf, [examples[i] for i in test_idx])
    return p, np.array([e.label for e in examples])


def bench_classifier() -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    plan: list[tuple[str, tuple[str, ...], int]] = [
        ("gsm8k-zeroeval", ("gemma-2-2b-it", "Meta-Llama-3-8B-Instruct", "Mixtral-8x7B-Instruct-v0.1"), 1),
        ("routerbench-arc", ("mistral-7b-chat", "WizardLM-13B-V1.2", "mixtral-8x7b-chat"), 1),
        ("routerbench-mbpp", ("mistral-7b-chat", "code-llama-instruct-34b-chat", "mixtral-8x7b-chat"), 1),
        # with 10 samples the classifier also sees their agreement (compare self-consistency above)
        ("crux-o-samples", ("codellama-7b", "codellama-13b"), 10),
    ]
    # MBPP's test split has 128 answers, too few to read an ECE from: also cross-validate on all
    cv_too = {"routerbench-mbpp"}
    for name, models, k in plan:
        data = outcomes.load(DATA / f"{name}.jsonl.gz")
        for model in models:
            examples = examples_from_outcomes(data, model, samples=k)
            started = time.perf_counter()
            if {e.split for e in examples} >= {"train", "test"}:
                # the file's own split: train on train, report on test
                train_set, test_set = split_examples(examples)
                clf, report = train_and_report(train_set, test_set)
                p, y = evaluate(clf, test_set)
                how = f"file split, train {report.n_train}"
            else:
                # no split in the file: 5-fold cross-validation, every answer scored by a classifier
                # that never saw it (pooled held-out predictions)
                p, y = cross_validated(examples, folds=5)
                how = f"5-fold CV, train {len(examples) * 4 // 5} per fold"
            seconds = (time.perf_counter() - started) / (1 if "file" in how else 5)
            rows.append(
                Row(
                    "classifier",
                    name,
                    model,
                    p,
                    y,
                    probability=True,
                    note=f"{how}, k={k}, {seconds:.1f}s per training",
                )
            )
            if name in cv_too:
                p, y = cross_validated(examples, folds=5)
                note = f"5-fold CV over both splits, train {len(examples) * 4 // 5} per fold"
                rows.append(Row("classifier", name, model, p, y, probability=True, note=note))
    return rows, notes


# -- verifier -----------------------------------------------------------------------------------

# set -> (model, verifier options without path, tier options for the replayed model)
VERIFIER_PLAN: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "gsm8k-zeroeval",
        "Meta-Llama-3-8B-Instruct",
        {
            "answer": "number",
            "partners": [
                {"samples": 1, "model": "Phi-3.5-mini-instruct"},
                {"samples": 1, "model": "Qwen2-7B-Instruct"},
            ],
            "checks": ["arithmetic"],
        },
        {},
    ),
    (
        "routerbench-arc",
        "mistral-7b-chat",
        {
            "answer": "choice",
            "partners": [
                {"samples": 1, "model": "WizardLM-13B-V1.2"},
                {"samples": 1, "model": "mixtral-8x7b-chat"},
            ],
        },
        {},
    ),
    (
        "routerbench-mbpp",
        "mistral-7b-chat",
        {"partners": [{"samples": 1, "model": "code-llama-instruct-34b-chat"}]},
        {},
    ),
    (
        "crux-o-samples",
        "codellama-7b",
        {"k": 10, "answer": "literal", "partners": [{"samples": 1, "model": "deepseek-instruct-6.7b"}]},
        {},
    ),
    (
        "crux-i-samples",
        "codellama-7b",
        {"k": 10, "answer": "literal", "partners": [{"samples": 1, "model": "deepseek-instruct-6.7b"}]},
        {},
    ),
    (
        "date-mot-3tier",
        "gpt-3.5-turbo-0613",
        {"k": 10, "answer": "date", "partners": [{"samples": 10, "options": {"variant": "pot"}}]},
        {"variant": "cot"},
    ),
    (
        "arena-judge",
        "Mixtral-8x7B-Instruct-v0.1",
        {
            "scorers": {
                "judge": {
                    "kind": "judge",
                    "provider": "replay_judge",
                    "model": "gpt-4-judge",
                    "options": {"path": "{path}"},
                    "price": {"input": 30, "output": 60},
                }
            }
        },
        {},
    ),
]


def bench_verifier() -> tuple[list[Row], list[str]]:
    """The verifier against each single signal it combines, on the same held-out answers (the
    file's split, else a seeded half): own-sample agreement, partner agreement, the arithmetic
    check, another scorer's score, and the text classifier alone (same training code and data)."""
    import json

    from cascade.learn.features import DENSE, FeatureConfig, dense_features
    from cascade.learn.verifier import train_verifier, verifier_examples
    from cascade.scorers.verifier import VerifierOptions

    rows: list[Row] = []
    notes: list[str] = []
    misses = []
    for name, model, opts, tier_opts in VERIFIER_PLAN:
        path = DATA / f"{name}.jsonl.gz"
        data = outcomes.load(path)
        spec = json.loads(json.dumps(opts).replace("{path}", str(path)))
        options = VerifierOptions(path="unused.json", **spec)
        positive_at = 6 / 9 if name == "arena-judge" else 0.5
        started = time.perf_counter()
        examples, names = _verifier_examples(verifier_examples, options, data, model, tier_opts, positive_at)
        # the file's split where it has one; else 5-fold cross-validation (every answer scored by a
        # verifier and a text classifier that never saw it), as for the classifier rows above
        if {e.split for e in examples} >= {"train", "test"}:
            train_set, test_set = split_examples(examples)
            folds = [(train_set, test_set)]
            how = f"file split, train {len(train_set)}"
        else:
            order = np.random.default_rng(0).permutation(len(examples))
            held = [set(order[k::5].tolist()) for k in range(5)]
            folds = [
                ([e for i, e in enumerate(examples) if i not in h], [examples[i] for i in sorted(h)])
                for h in held
            ]
            test_set = [e for _, part in folds for e in part]
            how = f"5-fold CV, train {len(examples) * 4 // 5} per fold"
        p_parts, c_parts = [], []
        for fit_set, part in folds:
            ver = train_verifier(fit_set, names)
            p_parts.append([ver.predict(e.prompt, e.samples, e.extra)[0] for e in part])
            text_only = [Example(e.prompt, e.samples, e.label, e.id, e.split) for e in fit_set]
            clf = train(text_only, config=FeatureConfig())
            c_parts.append([clf.predict(e.prompt, e.samples)[0] for e in part])
        seconds = (time.perf_counter() - started) / len(folds)
        y = np.array([e.label for e in test_set])
        p = np.array([x for part in p_parts for x in part])
        rows.append(
            Row("verifier", name, model, p, y, probability=True, note=f"{how}, "
                f"inputs: text + {', '.join(names) or 'none'}; {seconds:.0f}s per fold")
        )  # fmt: skip
        singles: list[tuple[str, np.ndarray]] = []
        if options.k > 1:
            own = np.array([dense_features(e.prompt, e.samples)[DENSE.index("agreement")] for e in test_set])
            singles.append((f"signal: own agreement (k={options.k})", own))
        col = {n: i for i, n in enumerate(names)}
        if "partners_agree_share" in col:
            share = np.array([e.extra[col["partners_agree_share"]] for e in test_set])
            singles.append((f"signal: partner agreement ({len(options.partners)})", share))
        for n in names:
            if n.startswith("score:"):
                singles.append((f"signal: {n[6:]} score", np.array([e.extra[col[n]] for e in test_set])))
            if n.endswith("_wrong") and n.startswith("check:") and not n.endswith("_any_wrong"):
                singles.append(
                    (f"signal: {n[6:]} (fewer is better)", -np.array([e.extra[col[n]] for e in test_set]))
                )
        singles.append(("signal: text classifier", np.array([x for part in c_parts for x in part])))
        best = max(metrics.auroc(v, y) for _, v in singles)
        for label, v in singles:
            rows.append(Row(label, name, model, v, y, probability=label.endswith("classifier")))
        got = metrics.auroc(p, y)
        if got < best:
            misses.append(f"{name}: verifier {got:.3f} < best single signal {best:.3f}")
    notes.append(
        "verifier vs the best single signal (held-out AUROC): "
        + ("at least as good on every set" if not misses else "; ".join(misses))
    )
    return rows, notes


def _verifier_examples(
    fn: Callable[..., Any],
    options: Any,
    data: outcomes.Outcomes,
    model: str,
    tier: dict[str, Any],
    positive_at: float,
) -> tuple[list[Example], tuple[str, ...]]:
    if not tier:
        out: tuple[list[Example], tuple[str, ...]] = fn(options, data, model, positive_at=positive_at)
        return out
    # a tier with provider options (a prompt variant): gather through a replay context by hand
    from cascade.evaluate.simulate import ReplayContext
    from cascade.policy.schema import TierSpec
    from cascade.scorers.verifier import VerifierInputs

    ctx = ReplayContext(ROOT, data, "auto")
    spec = TierSpec(name="v", provider="replay", model=model, options={"path": str(data.path), **tier})
    ctx.tier = spec
    inputs = VerifierInputs.build(options, ctx)
    provider = ctx.build_provider(spec)
    examples = []
    for r in data.records:
        rec = r.responses.get(model)
        if not rec or rec[0].quality is None:
            continue
        request = Request.of(r.prompt, metadata={"id": r.id})
        completion = provider.complete(request, options.k)
        got = inputs.gather(request, completion)
        label = (
            1.0
            if completion.samples[0].quality is not None and completion.samples[0].quality >= positive_at
            else 0.0
        )
        examples.append(Example(r.prompt, completion.samples, label, r.id, r.split, got.values))
    return examples, inputs.names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("sc", "judge", "clf", "ver"), help="run one scorer's benchmarks")
    args = parser.parse_args(argv)
    if not (DATA / "README.md").exists():
        print(
            f"recorded outcomes not found at {DATA}: set CASCADE_DATA to run this benchmark", file=sys.stderr
        )
        return 2
    rows: list[Row] = []
    notes: list[str] = []
    if args.only in (None, "sc"):
        rows += bench_self_consistency()
    if args.only in (None, "judge"):
        judge_rows, summary = bench_judge()
        rows += judge_rows
        notes.append(summary)
    if args.only in (None, "clf"):
        clf_rows, clf_notes = bench_classifier()
        rows += clf_rows
        notes += clf_notes
    if args.only in (None, "ver"):
        ver_rows, ver_notes = bench_verifier()
        rows += ver_rows
        notes += ver_notes
    print(table(rows))
    for n in notes:
        print(f"\n{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
