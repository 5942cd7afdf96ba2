"""Write a tuned policy as YAML (the skeleton's settings kept, the figures as comments) and diff it."""

from __future__ import annotations

import copy
import difflib
import math
import os
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


def tuned_raw(
    skeleton: str | Path, tuning: Tuning, setting: Setting, tuned: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The skeleton's top-level settings with the chosen tiers (raw YAML values, ``${VAR}`` kept);
    ``tuned``: the ``tuned:`` block (data file and split) ``cascade eval`` reads."""
    data = yaml.safe_load(Path(skeleton).read_text(encoding="utf-8"))
    out: dict[str, Any] = {k: v for k, v in data.items() if k not in ("tiers", "tuned")}
    tiers = []
    for pos, idx in enumerate(setting.tiers):
        raw = copy.deepcopy(tuning.candidates[idx].raw)
        if pos == len(setting.tiers) - 1:
            raw.pop("scorer", None)
            raw.pop("threshold", None)
        else:
            raw["threshold"] = floor_threshold(setting.thresholds[pos])
            b = tuning.boundary
            if b is not None and setting == tuning.choice and pos == b.pos:
                raw["threshold"] = floor_threshold(b.above)
                raw["scorer"] = {
                    "kind": "boundary",
                    "scorer": raw["scorer"],
                    "above": floor_threshold(b.above),
                    "below": floor_threshold(b.below),
                    "p": b.p,
                    "seed": b.seed,
                }
        tiers.append(raw)
    keys = list(out)
    ordered: dict[str, Any] = {}
    for k in ("name", "description"):
        if k in out:
            ordered[k] = out[k]
    ordered["tiers"] = tiers
    for k in keys:
        ordered.setdefault(k, out[k])
    if tuned is not None:
        ordered["tuned"] = tuned
    return ordered


def rebase(raw: dict[str, Any], skeleton: str | Path, out: str | Path) -> dict[str, Any]:
    """Relative ``options.path`` values (replay files), written for the skeleton's folder, made
    relative to ``out``'s folder so the written policy finds them where it is saved."""
    src = Path(skeleton).resolve().parent
    dst = Path(out).resolve().parent
    if src == dst:
        return raw

    def fix(options: Any) -> None:
        if isinstance(options, dict) and isinstance(options.get("path"), str):
            value = options["path"]
            if "${" not in value and not Path(value).expanduser().is_absolute():
                options["path"] = os.path.relpath(src / value, dst)

    for tier in raw.get("tiers", []):
        fix(tier.get("options"))
        scorer = tier.get("scorer")
        while isinstance(scorer, dict):
            fix(scorer.get("options"))
            scorer = scorer.get("scorer")
    return raw


def tuned_block(tuning: Tuning, data_path: str | Path, policy_path: str | Path) -> dict[str, Any]:
    """The ``tuned:`` block: the data file (relative to the policy when it can be) and the split."""
    split = tuning.split or {"split": "auto", "seed": 0, "test_fraction": 0.5}
    return {"data": relative_data(data_path, policy_path), **split}


def relative_data(data_path: str | Path, policy_path: str | Path) -> str:
    """The data file as a policy's ``tuned.data``: relative to the policy's folder when it can be."""
    data_abs = Path(data_path).resolve()
    try:
        return str(data_abs.relative_to(Path(policy_path).resolve().parent))
    except ValueError:
        return str(data_abs)


def _num(x: Any, spec: str) -> str:
    """A figure, or ``n/a`` when it is missing; never ``-0.0000``."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    text = f"{x:{spec}}"
    try:
        if float(text.rstrip("%")) == 0:
            text = f"{0.0:{spec}}"
    except ValueError:
        pass
    return text


def _iv(d: dict[str, Any] | None, spec: str, money: bool = False) -> str:
    """``value (95% CI low .. high)`` from an interval dict, missing parts as n/a."""
    if not d:
        return "n/a"

    def fmt(x: Any) -> str:
        return usd(x) if money else _num(x, spec)

    if d.get("value") is None:
        return "n/a"
    if d.get("low") is None or d.get("high") is None:
        return fmt(d["value"])
    return f"{fmt(d['value'])}  (95% CI {fmt(d['low'])} .. {fmt(d['high'])})"


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
    """What the tuner predicts, for the top of the written policy. A figure that is missing is
    written as ``n/a`` (or left out with the reason): it never stops the policy being written."""
    f = figures
    n_train = int(tuning.train.sum())
    lines = [
        "Tuned by `cascade tune` from recorded outcomes; review before use.",
        f"data: {f.get('file')}  (tuned on {n_train} records,"
        f" figures on {f.get('records')} held-out records; `cascade eval` measures the same part)",
        f"objective: {objective}",
    ]
    g = tuning.guarantee
    if g is not None:
        lines.append(f"guarantee: {g.sentence()}")
        delta = ((f.get("vs_reference") or {}).get("quality_delta") or {}).get("value")
        realised = None if delta is None else -float(delta)
        lines.append(
            f"  {g.tested} settings tested, {g.rejected} passed;"
            + (
                ""
                if g.fallback
                else f" calibration drop {_num(g.calibration_drop, '+.4f')}, p-value {_num(g.pvalue, '.3g')};"
            )
            + f" realised drop on the held-out part {_num(realised, '+.4f')}"
        )
    if tuning.boundary is not None:
        bd = tuning.boundary
        lines.append(
            f"randomised boundary (kind: boundary, seed {bd.seed}): tier {bd.pos + 1} accepts scores in"
            f" [{bd.below:.4g}, {bd.above:.4g}) for {bd.p:.1%} of requests, chosen by a hash of the prompt"
            " (reproducible), to spend the cost cap"
        )
    lines.append(f"predicted quality     {_iv(f.get('quality'), '.4f')}")
    lines.append(f"predicted cost/query  {_iv(f.get('cost_per_query_usd'), '', money=True)}")
    b = f.get("best_single") or {}
    if b:
        lines.append(
            f"best single model on the held-out part: {b.get('model')},"
            f" quality {_num((b.get('quality') or {}).get('value'), '.4f')},"
            f" cost/query {usd(b.get('cost_per_query_usd'))}"
        )
    vs = f.get("vs_best") or {}
    if vs:
        lines.append(
            f"vs that model: quality {_iv(vs.get('quality_delta'), '+.4f')},"
            f" cost {_iv(vs.get('cost_share'), '.1%')} of it"
        )
    if "vs_reference" in f:
        r = f["vs_reference"]
        lines.append(
            f"vs {r['model']} (best on the training part): quality"
            f" {_num((r.get('quality_delta') or {}).get('value'), '+.4f')},"
            f" cost {_num((r.get('cost_share') or {}).get('value'), '.1%')} of it"
        )
    if "pair" in f:
        p = f["pair"]
        lines.append(
            f"cheapest/strongest model {p['weak']} -> {p['strong']}: APGR"
            f" {_num((p.get('apgr') or {}).get('value'), '.3f')},"
            f" strong-model calls {_num(p.get('policy_strong_share'), '.1%')}"
        )
    elif f.get("pair_omitted"):
        lines.append(f"APGR/CPT omitted: {f['pair_omitted']}")
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


__all__ = [
    "diff",
    "floor_threshold",
    "header_lines",
    "rebase",
    "relative_data",
    "render",
    "tier_notes",
    "tuned_block",
    "tuned_raw",
]
