"""Live figures from an outcome log, next to what the tuned policy predicted, with drift flags.

Per tier: how often it was reached (called live), answered, accepted, and its accept rate;
escalations by reason; cost per request; shadow rows and spend; quality estimated on the labelled
shadow rows (the unbiased sample: the live answer's label) that got an answer. An abstention is
no tier's answer (:func:`~cascade.observe.logfile.answered`): it is counted apart (``abstained``).
A tuned policy's header (written by ``cascade tune``) gives predicted quality and cost per query
with 95% intervals, and each tier's note its held-out accept rate and how many records it rests on.

Drift: a live figure is flagged when it differs from the prediction by more than 1.96 standard
errors of the difference (the prediction's, from its interval or its record count, and the live
figure's own), so a small live sample does not raise false alarms.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from cascade.files import replacing
from cascade.money import usd_brief as _usd
from cascade.observe.logfile import abstained, answered, meta
from cascade.observe.metrics import reason_kind

Z = 1.96
_NUM = r"\$?([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_PRED = {
    "quality": re.compile(rf"predicted quality\s+{_NUM}\s+\(95% CI {_NUM} \.\. {_NUM}\)"),
    "cost_per_request": re.compile(rf"predicted cost/query\s+{_NUM}\s+\(95% CI {_NUM} \.\. {_NUM}\)"),
}
_TIER_NOTE = re.compile(r"held-out: reached by (\d+) records, accepts ([\d.]+)%")
_TIER_NAME = re.compile(r"^\s*-\s*name:\s*['\"]?([A-Za-z0-9_.-]+)")


def predictions(policy_text: str) -> dict[str, Any]:
    """Predicted figures from a tuned policy's comments (empty when it carries none)."""
    out: dict[str, Any] = {"tiers": {}}
    note: tuple[int, float] | None = None
    for line in policy_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            for key, rx in _PRED.items():
                m = rx.search(stripped)
                if m:
                    out[key] = {"value": float(m[1]), "low": float(m[2]), "high": float(m[3])}
            m = _TIER_NOTE.search(stripped)
            if m:
                note = (int(m[1]), float(m[2]) / 100)
            continue
        m = _TIER_NAME.match(line)
        if m and note is not None:
            out["tiers"][m[1]] = {"reached": note[0], "accept_rate": note[1]}
            note = None
    return out


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n``: within [0, 1] and holding ``k / n``
    (exactly 0 below when ``k == 0`` and 1 above when ``k == n``, where rounding fell short)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + Z * Z / n
    c = (p + Z * Z / (2 * n)) / d
    h = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / d
    low = 0.0 if k == 0 else min(p, max(0.0, c - h))
    high = 1.0 if k == n else max(p, min(1.0, c + h))
    return (low, high)


def mean_ci(xs: Sequence[float]) -> dict[str, float] | None:
    if not xs:
        return None
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return {"value": m, "low": m - Z * sd / math.sqrt(n), "high": m + Z * sd / math.sqrt(n), "n": n}


def _drift(live: Mapping[str, float], pred: Mapping[str, float]) -> bool:
    se_live = (live["high"] - live["low"]) / (2 * Z)
    se_pred = (pred["high"] - pred["low"]) / (2 * Z)
    return abs(live["value"] - pred["value"]) > Z * math.sqrt(se_live**2 + se_pred**2) + 1e-12


def _money(v: Any) -> Decimal:
    try:
        return Decimal(str(v))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _returned_quality(row: Mapping[str, Any]) -> float | None:
    m = meta(row)
    tiers = m.get("tiers") or {}
    t = tiers.get(answered(row)) if isinstance(tiers, dict) else None
    if not isinstance(t, dict):
        return None
    samples = row["responses"].get(t.get("model")) or []
    raw = t.get("chosen")
    chosen = raw if isinstance(raw, int) else 0
    if not 0 <= chosen < len(samples):
        return None
    q = samples[chosen].get("quality")
    return float(q) if isinstance(q, int | float) and not isinstance(q, bool) else None


def report(
    rows: Sequence[Mapping[str, Any]], tiers: Sequence[str], predicted: Mapping[str, Any]
) -> dict[str, Any]:
    """The live figures (see the module docstring) as a JSON-ready dict."""
    n = len(rows)
    reached: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    accepted: Counter[str] = Counter()
    escalations: dict[str, Counter[str]] = defaultdict(Counter)
    costs: list[float] = []
    shadow_spend = Decimal(0)
    shadow_rows = errors = pinned = abstentions = 0
    quality: list[float] = []
    stamps = []
    for r in rows:
        m = meta(r)
        if isinstance(m.get("ts"), str):
            stamps.append(m["ts"])
        raw = m.get("tiers")
        trace: dict[str, Any] = raw if isinstance(raw, dict) else {}
        for name, t in trace.items():
            if not isinstance(t, dict) or t.get("shadow"):
                continue
            reason = str(t.get("reason") or "")
            if t.get("decision") in ("escalated", "stopped"):  # stopped: the budget refused the call
                escalations[name][reason_kind(reason)] += 1
            if t.get("called", True) and not reason.startswith("pinned"):
                reached[name] += 1
        if m.get("error"):
            errors += 1
        if m.get("pinned"):
            pinned += 1
        tier = answered(r)
        abstentions += abstained(r)
        if tier is not None:
            answers[tier] += 1
            if m.get("accepted") is True:
                accepted[tier] += 1
        costs.append(float(_money(m.get("cost", 0))))
        shadow_spend += _money(m.get("shadow_cost", 0))
        if m.get("shadow"):
            shadow_rows += 1
            q = _returned_quality(r)
            if q is not None:
                quality.append(q)
    pred_tiers = predicted.get("tiers") or {}
    tier_rows = []
    for name in tiers:
        k, nr = accepted[name], reached[name]
        row: dict[str, Any] = {
            "tier": name,
            "reached": nr,
            "answered": answers[name],
            "accepted": k,
            "accept_rate": k / nr if nr else None,
            "accept_rate_ci": list(wilson(k, nr)) if nr else None,
            "escalations": dict(escalations.get(name, {})),
        }
        p = pred_tiers.get(name)
        if p is not None:
            pr, pn = p["accept_rate"], max(1, p["reached"])
            se = math.sqrt(max(pr * (1 - pr), 1e-9) / pn)
            row["predicted_accept_rate"] = pr
            row["predicted_interval"] = [max(0.0, pr - Z * se), min(1.0, pr + Z * se)]
            if nr:
                lo, hi = wilson(k, nr)
                live = {"value": k / nr, "low": lo, "high": hi}
                row["drift"] = _drift(live, {"value": pr, "low": pr - Z * se, "high": pr + Z * se})
        tier_rows.append(row)
    out: dict[str, Any] = {
        "rows": n,
        "period": [min(stamps), max(stamps)] if stamps else None,
        "errors": errors,
        "abstained": abstentions,
        "pinned_rows": pinned,
        "shadow_rows": shadow_rows,
        "shadow_spend_usd": str(shadow_spend.quantize(Decimal("1e-9")).normalize()),
        "tiers": tier_rows,
        "cost_per_request": mean_ci(costs),
        "quality": None,
    }
    if quality:
        if all(q in (0.0, 1.0) for q in quality):  # right/wrong labels: a binomial interval
            right = sum(q >= 0.5 for q in quality)
            lo, hi = wilson(right, len(quality))
            out["quality"] = {"value": right / len(quality), "low": lo, "high": hi, "n": len(quality)}
        else:
            out["quality"] = mean_ci(quality)
    for key in ("quality", "cost_per_request"):
        if key in predicted:
            if out[key] is None:
                out[key] = {}
            out[key]["predicted"] = predicted[key]
            if "value" in out[key]:
                out[key]["drift"] = _drift(out[key], predicted[key])
    out["drift"] = any(t.get("drift") for t in tier_rows) or any(
        bool(out[k] and out[k].get("drift")) for k in ("quality", "cost_per_request")
    )
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def table(fig: Mapping[str, Any]) -> str:
    """The report for people."""
    lines = [
        f"{fig['rows']} requests" + (f" ({fig['period'][0]} .. {fig['period'][1]})" if fig["period"] else "")
    ]
    lines.append(
        f"errors {fig['errors']}, abstained {fig.get('abstained', 0)}, pinned {fig['pinned_rows']},"
        f" shadow rows {fig['shadow_rows']}"
        f" (shadow spend ${fig['shadow_spend_usd']}, not in cost/request)"
    )
    lines.append("")
    lines.append(
        f"{'tier':<16}{'reached':>8}{'answered':>9}{'accepted':>9}{'accept rate (95% CI)':>26}  predicted"
    )
    for t in fig["tiers"]:
        ci = t["accept_rate_ci"]
        live = "-" if ci is None else f"{_pct(t['accept_rate'])} ({ci[0]:.1%}..{ci[1]:.1%})"
        pred = ""
        if "predicted_accept_rate" in t:
            lo, hi = t["predicted_interval"]
            pred = f"{t['predicted_accept_rate']:.1%} ({lo:.1%}..{hi:.1%})" + (
                "  DRIFT" if t.get("drift") else ""
            )
        lines.append(
            f"{t['tier']:<16}{t['reached']:>8}{t['answered']:>9}{t['accepted']:>9}{live:>26}  {pred}"
        )
    esc = [
        f"{t['tier']}: " + ", ".join(f"{k} {v}" for k, v in sorted(t["escalations"].items()))
        for t in fig["tiers"]
        if t["escalations"]
    ]
    if esc:
        lines.append("escalations: " + "; ".join(esc))
    lines.append("")
    for key, label, fmt in (
        ("cost_per_request", "cost/request", _usd),
        ("quality", "quality", lambda x: f"{x:.4f}"),
    ):
        f = fig.get(key)
        if not f:
            continue
        text = f"{label:<13}"
        if "value" in f:
            text += f"live {fmt(f['value'])} (95% CI {fmt(f['low'])} .. {fmt(f['high'])}, n={f['n']})"
        else:
            text += "live -"
            if key == "quality":
                text += " (no labelled shadow rows: run `cascade label`)"
        if "predicted" in f:
            p = f["predicted"]
            text += f"  predicted {fmt(p['value'])} ({fmt(p['low'])} .. {fmt(p['high'])})"
            text += "  DRIFT" if f.get("drift") else ""
        lines.append(text)
    lines.append("")
    lines.append("drift: " + ("YES: a live figure left its predicted interval" if fig["drift"] else "none"))
    return "\n".join(lines)


def plot(fig: Mapping[str, Any], path: str | Path) -> None:
    """Live vs predicted accept rates per tier (matplotlib, the ``plot`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiers = [t for t in fig["tiers"] if t["accept_rate"] is not None]
    fig_, ax = plt.subplots(figsize=(6, 3.5))
    xs = range(len(tiers))
    live = [t["accept_rate"] for t in tiers]
    err = [
        [t["accept_rate"] - t["accept_rate_ci"][0] for t in tiers],
        [t["accept_rate_ci"][1] - t["accept_rate"] for t in tiers],
    ]
    ax.errorbar([x - 0.1 for x in xs], live, yerr=err, fmt="o", label="live")
    pt = [(x, t) for x, t in zip(xs, tiers, strict=True) if "predicted_accept_rate" in t]
    if pt:
        ax.errorbar(
            [x + 0.1 for x, _ in pt],
            [t["predicted_accept_rate"] for _, t in pt],
            yerr=[
                [t["predicted_accept_rate"] - t["predicted_interval"][0] for _, t in pt],
                [t["predicted_interval"][1] - t["predicted_accept_rate"] for _, t in pt],
            ],
            fmt="s",
            label="predicted",
        )
    ax.set_xticks(list(xs), [t["tier"] for t in tiers])
    ax.set_ylabel("accept rate")
    ax.set_ylim(0, 1)
    ax.legend()
    fig_.tight_layout()
    with replacing(path) as tmp:
        fig_.savefig(tmp, dpi=120)
    plt.close(fig_)


__all__ = ["mean_ci", "plot", "predictions", "report", "table", "wilson"]
