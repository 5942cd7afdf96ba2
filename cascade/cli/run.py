"""``cascade run``: one prompt (argument or stdin) or a batch file through a policy.

Input is checked before any money is reserved: text must be UTF-8, a batch line's ``budget_key`` a
string and its messages well-formed. In a batch, one failing row never stops the others: its
error (and whatever it spent) is written in its place and every paid answer reaches ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from cascade.cli import UsageError
from cascade.cli.progress import Progress
from cascade.errors import CascadeError, InvalidRequestError
from cascade.files import Input, Output, check_outputs, policy_inputs, replacing, writing
from cascade.request import Request
from cascade.types import show

NAME = "run"
HELP = "Run a prompt (or a batch of prompts) through a policy."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", "-p", required=True, help="policy YAML file")
    parser.add_argument("prompt", nargs="?", help="the prompt, or - to read it from stdin")
    parser.add_argument("--json", action="store_true", help="print the full trace as JSON")
    parser.add_argument(
        "--explain", action="store_true", help="print the decision trace (to stderr) after the answer"
    )
    parser.add_argument(
        "--batch",
        metavar="FILE",
        help="JSON Lines of prompts: a string, or {prompt|messages, id, budget_key}",
    )
    parser.add_argument("--out", metavar="FILE", help="where batch results go (JSON Lines, input order)")
    parser.add_argument("--concurrency", type=int, default=16, help="batch runs at once (default 16)")
    parser.add_argument("--budget-key", help="caller key for per-key spend caps (tenant, user)")
    parser.add_argument(
        "--provider-batch",
        action="store_true",
        help="with --batch: each tier round is one provider batch job (OpenAI Batch API), at batch prices",
    )
    parser.add_argument(
        "--state",
        metavar="FILE",
        help="with --provider-batch: the resumable job state (default: --out + .state.json)",
    )
    parser.add_argument(
        "--poll", type=float, default=30.0, help="with --provider-batch: seconds between polls (default 30)"
    )


def run(args: argparse.Namespace) -> int:
    from cascade.engine.build import build

    if (args.state or args.provider_batch) and not args.batch:
        raise UsageError("--provider-batch and --state are for --batch FILE")
    if args.state and not args.provider_batch:
        raise UsageError("--state is for --provider-batch")
    if not args.poll >= 0:
        raise UsageError(f"--poll: seconds, at least 0 (got {args.poll})")
    if args.batch:
        if args.prompt:
            raise UsageError("give either a prompt or --batch, not both")
        if not args.out:
            raise UsageError("--batch needs --out FILE for the results")
        if args.concurrency < 1:
            raise UsageError(f"--concurrency: at least 1 (got {args.concurrency})")
        if args.json or args.explain:
            raise UsageError(
                "--json and --explain are for one prompt; --batch writes each full trace to --out"
            )
        outputs = [Output("--out", Path(args.out))]
        if args.provider_batch:
            outputs.append(Output("--state", _state_path(args)))
        check_outputs(
            outputs,
            [Input("the --batch file", Path(args.batch)), *policy_inputs(args.policy, "the --policy file")],
        )
        _text(args.budget_key, "--budget-key")
        items = _read_batch(Path(args.batch), args.budget_key)
        cascade = build(args.policy)
        if args.provider_batch:
            return _run_provider_batch(cascade, items, Path(args.out), args)
        return _run_batch(cascade, items, Path(args.out), args)
    if args.prompt is None:
        raise UsageError("give a prompt, - to read it from stdin, or --batch FILE")
    if args.out:
        raise UsageError("--out is for --batch results; a single answer goes to stdout")
    prompt = _stdin() if args.prompt == "-" else _text(args.prompt, "the prompt")
    _text(args.budget_key, "--budget-key")
    if not prompt.strip():
        raise UsageError("empty prompt")
    cascade = build(args.policy)
    try:
        result = cascade.run(prompt, budget_key=args.budget_key)
    except CascadeError as err:
        if args.json:  # the trace of what was tried (and spent) before the error
            print(json.dumps(err.to_dict(), indent=2))
        raise
    finally:
        cascade.close()
    if args.json:
        print(result.to_json(indent=2))
        return 0
    print(result.answer)
    if args.explain:
        print(result.explain(), file=sys.stderr)
    elif result.abstention is not None:
        print(f"cascade: note: abstained ({result.abstention}); --explain says why", file=sys.stderr)
    elif not result.accepted:
        print(f"cascade: note: no tier accepted ({result.reason}); --explain says why", file=sys.stderr)
    return 0


def _text(value: str | None, what: str) -> str:
    """``value`` if it is valid Unicode; argv bytes that were not UTF-8 arrive as lone surrogates."""
    if value is None:
        return ""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8") from None
    return value


def _stdin() -> str:
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"stdin is not valid UTF-8 (byte {err.start})") from None


def _lines(path: Path) -> list[tuple[int, str]]:
    data = path.read_bytes()
    out = []
    for lineno, raw in enumerate(data.splitlines(), 1):
        try:
            out.append((lineno, raw.decode("utf-8")))
        except UnicodeDecodeError as err:
            raise UsageError(f"{path}:{lineno}: not valid UTF-8 (byte {err.start} of the line)") from None
    return out


_LINE_FIELDS = ("prompt", "messages", "id", "budget_key")


def _read_batch(path: Path, default_key: str | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    items = []
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as err:
            raise UsageError(f"{path}:{lineno}: not JSON ({err})") from None
        if isinstance(obj, str):
            obj = {"prompt": obj}
        ok = isinstance(obj, dict) and (
            (isinstance(obj.get("prompt"), str) and obj["prompt"].strip())
            or (isinstance(obj.get("messages"), list) and obj["messages"])
        )
        if not ok:
            raise UsageError(
                f"{path}:{lineno}: expected a non-empty string, or an object with a non-empty"
                " 'prompt' string or 'messages' list"
            )
        for field in obj:  # other fields are the caller's own; a near miss is a typo, not metadata
            near = difflib.get_close_matches(field.lower().replace("-", "_"), _LINE_FIELDS, n=1, cutoff=0.75)
            if field not in _LINE_FIELDS and near:
                raise UsageError(f"{path}:{lineno}: unknown field {field!r} (did you mean {near[0]!r}?)")
        # the caller's id goes to the run (a replay provider finds records by it); a line without
        # one is named by its number in the results only: a line number is no record's id
        obj["metadata"] = {"id": obj["id"]} if "id" in obj else {}
        obj.setdefault("id", str(lineno))
        key = obj.get("budget_key", default_key)
        if key is not None and not isinstance(key, str):
            raise UsageError(f"{path}:{lineno}: budget_key must be a string, not {type(key).__name__}")
        if not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool):
            raise UsageError(f"{path}:{lineno}: id must be a string or an integer")
        try:  # every line is checked before the first call reserves any money
            Request.of(obj.get("messages") or obj["prompt"], budget_key=key)
        except InvalidRequestError as err:
            raise UsageError(f"{path}:{lineno}: {err}") from None
        items.append(obj)
    if not items:
        raise UsageError(f"{path}: no prompts")
    return items


def _run_batch(cascade: Any, items: list[dict[str, Any]], out: Path, args: argparse.Namespace) -> int:
    progress = Progress(len(items), label="cascade")
    tiers: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    total = Decimal(0)
    errors = 0

    async def main() -> None:
        gate = asyncio.Semaphore(max(1, args.concurrency))

        async def one(item: dict[str, Any]) -> dict[str, Any]:
            prompt = item.get("messages") or item["prompt"]
            async with gate:
                try:
                    res = await cascade.arun(
                        prompt,
                        budget_key=item.get("budget_key", args.budget_key),
                        metadata=item["metadata"],
                    )
                    return {"id": item["id"], **res.to_dict()}
                except CascadeError as err:  # the row keeps what was tried and spent
                    return {"id": item["id"], **err.to_dict()}
                except Exception as err:  # one row's failure must not lose the others
                    # not a cascade error: a bug; the run's budget hold was settled at its worst case
                    return {
                        "id": item["id"],
                        "error": f"{type(err).__name__}: {err}",
                        "attempts": [],
                        "cost": None,
                    }

        tasks = [asyncio.ensure_future(one(item)) for item in items]
        for task in tasks:  # the bar moves as prompts finish; rows are written in input order
            task.add_done_callback(lambda _: progress.advance())
        try:
            await write(tasks)
        finally:
            await cascade.aclose()  # the async clients belong to this event loop

    async def write(tasks: list[asyncio.Task[dict[str, Any]]]) -> None:
        nonlocal total, errors
        for task in tasks:
            row = await task
            fh.write(json.dumps(row) + "\n")
            fh.flush()  # a paid answer is on disk as soon as the rows before it are
            total += Decimal(row["cost"] or 0)
            if "error" in row:
                errors += 1
            else:
                if not row.get("abstained"):  # no answer given: counted under its reason only
                    tiers[row["tier"]] += 1
                reasons[row["reason"]] += 1

    with replacing(out, keep_partial=True) as tmp:  # fails before anything is spent
        try:
            with tmp.open("w", encoding="utf-8") as fh:
                asyncio.run(main())
        except BaseException:  # the rows already paid for stay on disk; the old --out stays whole
            print(f"cascade: note: the rows written before the failure are in {tmp}", file=sys.stderr)
            raise
    progress.close()
    n = len(items)
    print(f"{n} prompts -> {out}")
    for tier in (t.name for t in cascade.tiers):
        print(f"  {tier:<20} {tiers[tier]:>6} answered ({tiers[tier] / n:.1%})")
    for reason, count in sorted(reasons.items()):
        print(f"  reason {reason:<13} {count:>6}")
    if errors:
        print(f"  errors               {errors:>6} (see the 'error' field in {out})")
    per_prompt = (total / n).quantize(Decimal("1e-9"))  # the ledger's unit: nano-dollars
    print(f"  total cost ${show(total)} (${show(per_prompt)} per prompt)")
    return 1 if errors == n else 0


def _state_path(args: argparse.Namespace) -> Path:
    return Path(args.state) if args.state else Path(args.out + ".state.json")


def _run_provider_batch(
    cascade: Any, items: list[dict[str, Any]], out: Path, args: argparse.Namespace
) -> int:
    """``--batch --provider-batch``: one provider batch job per tier round, resumable from --state."""
    from cascade.engine.batch import run_batch

    state = _state_path(args)
    if state.exists():
        print(f"cascade: resuming from {state}", file=sys.stderr)

    def told(tier: str, n: int) -> None:
        print(f"cascade: round {tier}: {n} prompts in one batch job", file=sys.stderr)

    keys = {item.get("budget_key", args.budget_key) for item in items}
    if len(keys) > 1:
        raise UsageError("--provider-batch: one budget_key for the whole file (use --budget-key)")
    try:
        report = run_batch(
            cascade.settings,
            [item.get("messages") or item["prompt"] for item in items],
            budget_key=keys.pop(),
            metadata=[item["metadata"] for item in items],
            state=state,
            poll_interval=args.poll,
            on_round=told,
        )
    finally:
        cascade.close()
    tiers: Counter[str] = Counter()
    errors = abstained = 0
    with writing(out) as fh:
        for item, res in zip(items, report.results, strict=True):
            fh.write(json.dumps({"id": item["id"], **res.to_dict()}) + "\n")
            if isinstance(res, CascadeError):
                errors += 1
            elif res.abstained:
                abstained += 1
            else:
                tiers[res.tier] += 1
    n = len(items)
    print(f"{n} prompts -> {out} ({len(report.jobs)} batch jobs: {', '.join(report.jobs)})")
    for tier in (t.name for t in cascade.tiers):
        print(f"  {tier:<20} {tiers[tier]:>6} answered ({tiers[tier] / n:.1%})")
    if abstained:
        print(f"  abstained            {abstained:>6} ({abstained / n:.1%})")
    if errors:
        print(f"  errors               {errors:>6} (see the 'error' field in {out})")
    if report.unmatched:
        print(f"  unmatched results    {report.unmatched:>6} (ignored: no request had their custom_id)")
    saved = 1 - report.cost / report.live_cost if report.live_cost else Decimal(0)
    print(
        f"  total cost ${show(report.cost)} at batch prices"
        f" (${show(report.live_cost)} at live prices: {saved:.0%} saved)"
    )
    return 1 if errors == n else 0
