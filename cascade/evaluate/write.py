"""Write a tuned policy as YAML (the skeleton's settings kept, the figures as comments) and diff it."""

from __future__ import annotations

import copy
import difflib
import math
from pathlib import Path
from typing import Any

import yaml

from cascade.evaluate.report import usd
from cascade.evaluate.tune import Setting, Tuning


def floor_threshold(x: float, digits: int = 6) -> float:
    """Round a threshold down, so every score that cleared it still does."""
    if math.isinf(x):
        return 1.0
    f = math.floor(x * 10**digits) / 10**digits
    return float(max(0.0, min(1.0, f)))


def tuned_raw(skeleton: str | Path, tuning: Tuning, setting: Setting) -> dict[str, Any]:
    """The skeleton's top-level settings with the chosen tiers (raw YAML values, ``${VAR}`` kept)."""
    data = yaml.safe_load(Path(skeleton).read_text(encoding="utf-8"))
    out: dict[str, Any] = {k: v for k, v in data.items() if k != "tiers"}
    tiers = []
    for pos, idx in enumerate(setting.tiers):
        raw = copy.deepcopy(tuning.candidates[idx].raw)
        if pos == len(setting.tiers) - 1:
            raw.pop("scorer", None)
            raw.pop("threshold", None)
        else:
            raw["threshold"] = floor_threshold(setting.thresholds[pos])
        tiers.append(raw)
    keys = list(out)
    ordered: dict[str, Any] = {}
    for k in ("name", "description"):
        if k in out:
            ordered[k] = out[k]
    ordered["tiers"] = tiers
    for k in keys:
        ordered.setdefault(k, out[k])
    return ordered


def _comment_block(lines: list[str]) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


def render(raw: dict[str, Any], header: list[str], tier_notes: dict[str, str]) -> str:
    """YAML text with a comment header and a comment above each tier."""
    body = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=110)
    out: list[str] = []
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("- name: "):
            name = stripped[len("- name: ") :].strip("'\"")
            if name in tier_notes:
                indent = line[: len(line) - len(line.lstrip())]
                out.append(f"{indent}# {tier_notes[name]}")
        out.append(line)
    return _comment_block(header) + "\n".join(out) + "\n"


def header_lines(figures: dict[str, Any], tuning: Tuning, objective: str) -> list[str]:
    """What the tuner predicts, for the top of the written policy."""
    q, c = figures["quality"], figures["cost_per_query_usd"]
    b = figures["best_single"]
    vs = figures["vs_best"]
    n_train = int(tuning.train.sum())
    lines = [
        "Tuned by `cascade tune` from recorded outcomes; review before use.",
        f"data: {figures['file']}  (tuned on {n_train} records,"
        f" figures on {figures['records']} held-out records)",
        f"objective: {objective}",
        f"predicted quality     {q['value']:.4f}  (95% CI {q['low']:.4f} .. {q['high']:.4f})",
        f"predicted cost/query  {usd(c['value'])}  (95% CI {usd(c['low'])} .. {usd(c['high'])})",
        f"best single model on the held-out part: {b['model']}, quality {b['quality']['value']:.4f},"
        f" cost/query {usd(b['cost_per_query_usd'])}",
        f"vs that model: quality {vs['quality_delta']['value']:+.4f}"
        f" (95% CI {vs['quality_delta']['low']:+.4f} .. {vs['quality_delta']['high']:+.4f}),"
        f" cost {vs['cost_share']['value']:.1%} of it"
        f" (95% CI {vs['cost_share']['low']:.1%} .. {vs['cost_share']['high']:.1%})",
    ]
    if "vs_reference" in figures:
        r = figures["vs_reference"]
        lines.append(
            f"vs {r['model']} (best on the training part): quality {r['quality_delta']['value']:+.4f},"
            f" cost {r['cost_share']['value']:.1%} of it"
        )
    if "pair" in figures:
        p = figures["pair"]
        lines.append(
            f"weak/strong {p['weak']} -> {p['strong']}: APGR {p['apgr']['value']:.3f},"
            f" strong-model calls {p['policy_strong_share']:.1%}"
        )
    return lines


def tier_notes(figures: dict[str, Any]) -> dict[str, str]:
    notes = {}
    for t in figures["tiers"]:
        if t["accept_rate"] is None:
            notes[t["tier"]] = "held-out: never reached"
            continue
        acc = "-" if t["accuracy_accepted"] is None else f"{t['accuracy_accepted']:.4f}"
        notes[t["tier"]] = (
            f"held-out: reached by {t['reached']} records, accepts {t['accept_rate']:.1%}"
            f" at quality {acc}; {usd(t['mean_cost_when_called'])} per call"
        )
    return notes


def diff(old_text: str, new_text: str, old_name: str, new_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            old_text.splitlines(keepends=True), new_text.splitlines(keepends=True), old_name, new_name
        )
    )


__all__ = ["diff", "floor_threshold", "header_lines", "render", "tier_notes", "tuned_raw"]
