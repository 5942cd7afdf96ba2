"""Label-free tuning: tune on strongest-model labels of a 10% shadow sample vs on its true labels.

    .venv/bin/python benchmarks/label_free.py [--data DIR] [--seeds 5] [--only NAME ...] [--json OUT]

For each recorded set (gsm8k-zeroeval, date-mot-3tier, crux-o-samples) and seed: half the records
are held out (true labels); a "shadow sample" of 10% of all records is drawn from the other half,
as `shadow: {rate: 0.1}` would give complete rows of live traffic. The sample is labelled two ways:
its true labels, and `cascade label --reference strongest` (each sample right when its answer
matches the strongest model's majority answer). `cascade tune` then picks a policy from each
labelling under the same cost cap (a share of the strongest model's cost), and both policies are
measured on the same held-out half with true labels. The target: within 1 quality point and 5 cost
points (percent of the strongest model's held-out cost) of each other. For scale, the last column
tunes on the true labels of a second, disjoint 10% sample: how far two equally good samples of
this size land apart.

Reads ../shared/data (or $CASCADE_DATA) and exits with a message where it is absent.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from data_path import default_data

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = default_data()
SHADOW = 0.10
CAPS = (0.3, 0.6)  # cost caps as shares of the strongest model's mean cost per query


def sc(k: int, answer: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "self_consistency", "k": k, "answer": answer, **extra}


# name -> strongest model (the top of the cascade), answer kind, skeleton tiers, tune arguments
SETS: dict[str, dict[str, Any]] = {
    "gsm8k-zeroeval": {
        "strongest": "gpt-4o-2024-08-06",
        "answer": "number",
        "tiers": [("gemma-2-9b-it", sc(1, "number"), {})],
        "tune": [
            "--models",
            "Meta-Llama-3.1-8B-Instruct,gpt-4o-mini-2024-07-18,Qwen2-72B-Instruct,gpt-4o-2024-08-06",
            "--partners",
            "2",
        ],
    },
    "date-mot-3tier": {
        "strongest": "gpt-4-0613",
        "answer": "text",
        "tiers": [
            (m, sc(k, "text"), {"variant": "cot", "billing": "prompt_once"})
            for m, k in (("llama-2-13b-chat", 20), ("gpt-3.5-turbo-0613", 20), ("gpt-4-0613", 3))
        ],
        "tune": ["--samples", "5,10"],
    },
    "crux-o-samples": {
        "strongest": "gpt-4-0613",
        "answer": "literal",
        "tiers": [("deepseek-base-6.7b", sc(10, "literal"), {})],
        "tune": ["--models", "deepseek-instruct-33b,gpt-3.5-turbo-0613,gpt-4-0613", "--samples", "3,5"],
    },
}


def skeleton(name: str, data: Path, spec: dict[str, Any], folder: Path) -> Path:
    tiers = []
    for i, (model, scorer, options) in enumerate(spec["tiers"]):
        t: dict[str, Any] = {
            "name": f"t{i}",
            "provider": "replay",
            "model": model,
            "options": {"path": str(data), **options},
        }
        if scorer is not None:
            t["scorer"], t["threshold"] = scorer, 0.5
        tiers.append(t)
    out = folder / f"{name}.yaml"
    out.write_text(yaml.safe_dump({"name": name, "tiers": tiers}, sort_keys=False))
    return out


def strongest_labels(rec: dict[str, Any], strongest: str, key: Any) -> dict[str, Any] | None:
    """The record with every sample labelled by agreement with the strongest model's majority answer
    (what `cascade label --reference strongest` does to a log row); None if it has no answer."""
    votes = Counter(k for s in rec["responses"].get(strongest, []) if (k := key(s.get("answer"))) is not None)
    if not votes:
        return None
    ref = votes.most_common(1)[0][0]
    out = json.loads(json.dumps(rec))
    for samples in out["responses"].values():
        for s in samples:
            s["quality"] = 1.0 if key(s.get("answer")) == ref else 0.0
    return out


def write(path: Path, records: list[dict[str, Any]], card: Path) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    path.with_name(path.name.replace(".jsonl.gz", ".card.json")).write_text(card.read_text())


def tune(skel: Path, data: Path, cap: float, extra: list[str], folder: Path) -> dict[str, Any] | None:
    from cascade.cli import main as cli

    out = folder / f"{data.stem}.{cap}.json"
    args = [
        "tune",
        str(skel),
        "--data",
        str(data),
        "--split",
        "file",
        "--cost-cap",
        f"{cap:.10f}",
        "--confidence",
        "0",
        "--out",
        str(folder / "tuned.yaml"),
        "--json",
        str(out),
        *extra,
    ]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = cli(args)
        except SystemExit as exc:  # a usage error: say which
            code = int(exc.code or 1)
    if code not in (0, 1):
        raise SystemExit(f"cascade tune failed: {err.getvalue().strip()}")
    return json.loads(out.read_text()) if code == 0 else None


def run_set(name: str, data_dir: Path, seeds: int, folder: Path) -> list[dict[str, Any]]:
    from cascade.scorers.answers import make_extractor

    spec = SETS[name]
    src = data_dir / f"{name}.jsonl.gz"
    card = data_dir / f"{name}.card.json"
    extract = make_extractor(spec["answer"])

    def key(a: Any) -> str | None:
        return None if a is None else extract(str(a))

    with gzip.open(src, "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    strongest_cost = statistics.mean(
        s[0]["cost_usd"] for r in records if (s := r["responses"].get(spec["strongest"])) and s[0]["cost_usd"]
    )
    rows = []
    for seed in range(seeds):
        rng = random.Random(seed)
        order = list(range(len(records)))
        rng.shuffle(order)
        held = set(order[: len(records) // 2])
        pool = [i for i in order if i not in held]
        size = round(SHADOW * len(records))
        shadow, other = pool[:size], pool[size : 2 * size]
        test = [dict(records[i], split="test") for i in sorted(held)]
        truth = [dict(records[i], split="train") for i in shadow]
        proxy = [
            dict(lab, split="train")
            for i in shadow
            if (lab := strongest_labels(records[i], spec["strongest"], key))
        ]
        files = {}
        other_truth = [dict(records[i], split="train") for i in other]
        for kind, train in (("true", truth), ("strongest", proxy), ("true_other_sample", other_truth)):
            files[kind] = folder / f"{name}-{seed}-{kind}.jsonl.gz"
            write(files[kind], train + test, card)
        skel = skeleton(name, files["true"], spec, folder)
        agree = sum(
            (a["responses"][m][0]["quality"] >= 0.5) == (b["responses"][m][0]["quality"] >= 0.5)
            for a, b in zip(truth, (strongest_labels(r, spec["strongest"], key) for r in truth), strict=True)
            if b is not None
            for m in a["responses"]
            if a["responses"][m] and a["responses"][m][0].get("quality") is not None
        )
        compared = sum(
            1
            for a in truth
            if strongest_labels(a, spec["strongest"], key) is not None
            for m in a["responses"]
            if a["responses"][m] and a["responses"][m][0].get("quality") is not None
        )
        for share in CAPS:
            cap = share * strongest_cost
            got = {kind: tune(skel, f, cap, spec["tune"], folder) for kind, f in files.items()}
            row: dict[str, Any] = {
                "set": name,
                "seed": seed,
                "cap_share": share,
                "shadow_rows": len(shadow),
                "test_rows": len(test),
                "label_agreement": agree / compared if compared else None,
            }
            for kind, ev in got.items():
                if ev is None:
                    row[kind] = None
                    continue
                strong = next(m for m in ev["single_models"] if m["model"] == spec["strongest"])
                row[kind] = {
                    "quality": ev["quality"]["value"],
                    "cost": ev["cost_per_query_usd"]["value"],
                    "cost_pct_of_strongest": 100
                    * ev["cost_per_query_usd"]["value"]
                    / strong["cost_per_query_usd"],
                    "tiers": [t["model"] for t in ev["tiers"]],
                }
            if row["true"] and row["strongest"]:
                row["quality_gap_points"] = 100 * (row["strongest"]["quality"] - row["true"]["quality"])
                row["cost_gap_points"] = (
                    row["strongest"]["cost_pct_of_strongest"] - row["true"]["cost_pct_of_strongest"]
                )
            if row["true"] and row["true_other_sample"]:  # the noise of tuning on 10%: another sample
                row["sample_noise_quality_points"] = 100 * (
                    row["true_other_sample"]["quality"] - row["true"]["quality"]
                )
                row["sample_noise_cost_points"] = (
                    row["true_other_sample"]["cost_pct_of_strongest"] - row["true"]["cost_pct_of_strongest"]
                )
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--only", nargs="*", choices=list(SETS))
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    if not (args.data / "README.md").exists():
        print(f"recorded outcomes not found at {args.data} (set CASCADE_DATA); nothing to run")
        return
    print("## Label-free tuning: strongest-model labels vs true labels on the same 10% shadow sample\n")
    print(
        "Held-out half, true labels; cost cap = share of the strongest model's cost; mean over seeds"
        " (worst seed in brackets).\n"
    )
    print(
        "| set | cap | shadow rows | label agreement | quality (true labels) | quality (strongest labels)"
        " | quality gap, points | cost gap, points of strongest | within 1 q / 5 c"
        " | noise: true labels, another sample (mean abs q / c) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    all_rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(SETS):
            rows = run_set(name, args.data, args.seeds, Path(tmp))
            all_rows += rows
            for share in CAPS:
                rs = [r for r in rows if r["cap_share"] == share and "quality_gap_points" in r]
                if not rs:
                    print(f"| {name} | {share:.0%} | - | - | - | - | no feasible setting | - | - |")
                    continue
                qg = [r["quality_gap_points"] for r in rs]
                cg = [r["cost_gap_points"] for r in rs]
                ok = sum(abs(q) <= 1 and abs(c) <= 5 for q, c in zip(qg, cg, strict=True))
                noise = [r for r in rs if "sample_noise_quality_points" in r]
                nq = statistics.mean(abs(r["sample_noise_quality_points"]) for r in noise) if noise else None
                nc = statistics.mean(abs(r["sample_noise_cost_points"]) for r in noise) if noise else None
                noise_text = "-" if nq is None or nc is None else f"{nq:.2f} / {nc:.2f}"
                label_text = f"{statistics.mean(map(abs, qg)):.2f} / {statistics.mean(map(abs, cg)):.2f}"
                print(
                    f"| {name} | {share:.0%} | {rs[0]['shadow_rows']} | "
                    f"{statistics.mean(r['label_agreement'] for r in rs):.1%} | "
                    f"{statistics.mean(r['true']['quality'] for r in rs):.4f} | "
                    f"{statistics.mean(r['strongest']['quality'] for r in rs):.4f} | "
                    f"{statistics.mean(qg):+.2f} [{max(qg, key=abs):+.2f}] | "
                    f"{statistics.mean(cg):+.2f} [{max(cg, key=abs):+.2f}] | {ok}/{len(rs)} seeds"
                    f" (mean abs {label_text}) | {noise_text} |"
                )
    print(f"\n{3 * len(all_rows)} tunings in {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(all_rows, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
