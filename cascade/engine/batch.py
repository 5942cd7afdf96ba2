"""A cascade over provider batch APIs: many prompts, one batch job per tier round.

:func:`run_batch` drives one :func:`cascade.engine.loop.steps` generator per prompt. Reserves,
settles, skip estimates and scoring are executed at once (:func:`cascade.engine.drive.execute`);
the rows' pending :class:`~cascade.engine.actions.Call` of the lowest tier are collected and sent as
one provider batch job: OpenAI Batch API (upload a JSONL file, create the batch, poll, download
results and errors; samples as ``n``) or Anthropic Message Batches (one request per sample).
Each result goes back to its row's generator, which scores it; escalated rows wait for the next
tier's job. A tier judged by a :class:`~cascade.scorers.judge.JudgeScorer` on a batch provider has a
second job in its round: its rows' judge requests (the loop's :class:`Rate` is answered from it).
Prices are the provider's batch prices (:func:`cascade.price_table.batch_price`), in
reservations too, so caps hold across rounds.

Resumable: with ``state``, a JSON file records every submitted job, every result downloaded and
every verdict of a scorer that ran live (a mixture's votes: paid once, replayed on resume),
written atomically before anything depends on it. Re-running with the same prompts replays the
recorded results into fresh generators (a row's settled tiers are not reserved or settled again)
and polls a job that was submitted but not finished instead of sending it again.

Faults: a row without a result (an expired or cancelled job, a failed job, a partial or
mismatched result file) or with an error line gets a :class:`ProviderError` as its call's outcome:
the loop escalates it with that reason, or on the last tier it ends in the error output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from cascade.budget import Budget, hold_buckets
from cascade.engine.actions import Call, CallOutcome, Rate, RateOutcome, Reserve, Reserved, Tier
from cascade.engine.drive import Steps, execute
from cascade.engine.loop import Outcome, Settings, steps
from cascade.errors import (
    CascadeError,
    ConfigurationError,
    PermanentProviderError,
    ProviderError,
    ScorerError,
)
from cascade.files import write_text
from cascade.logging import get_logger
from cascade.price_table import BATCH_DISCOUNT, batch_price
from cascade.request import Prompt, Request
from cascade.scorers.judge import JudgeError, JudgeScorer
from cascade.types import ZERO, CascadeResult, Completion, Score, Usage

ENDPOINT = "/v1/chat/completions"
BATCH_HOLD_TTL = 25 * 3600.0
"""Seconds a batch round's holds live: a job's completion window (24 h) and an hour's slack, so
the caps count the round's worst case for as long as its job may run (``hold_ttl``, if longer)."""
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled", "ended"})  # "ended": Anthropic


class BatchStateError(ConfigurationError):
    """The state file does not belong to this job (other prompts or another policy), or is unreadable."""


@dataclass
class BatchReport:
    """What :func:`run_batch` returns: per prompt its result or error, in input order."""

    results: list[CascadeResult | CascadeError]
    jobs: list[str]  # the provider batch ids, in submission order
    cost: Decimal  # what the run spent at batch prices
    live_cost: Decimal  # the same usage at the tiers' list prices
    unmatched: int = 0  # result lines whose custom_id matched no request sent


@dataclass
class _Row:
    index: int
    gen: Steps
    pending: Call | None = None
    rating: tuple[Rate, Request] | None = None  # a judge's verdict awaited from a batch job: its request
    result: CascadeResult | CascadeError | None = None
    calls: int = 0  # calls yielded so far (the k-th call's recorded result is replayed)
    settled: int = 0  # calls whose reserve/settle were executed in an earlier run (not repeated)
    hold: str | None = None  # its latest reservation's hold: open while it waits for a round


@dataclass
class _State:
    path: Path | None
    fingerprint: str
    jobs: list[dict[str, Any]] = field(default_factory=list)
    settled: dict[str, int] = field(default_factory=dict)  # row -> calls settled
    # a row's tier's verdict by a scorer that ran live (a mixture's votes, a judge off the batch
    # APIs): paid once, so a resumed run replays it instead of calling the scorer's models again
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    # a row's k-th call's hold (durable ledgers' ids only): a resumed run settles it, not a new one
    holds: dict[str, str] = field(default_factory=dict)

    def save(self) -> None:
        if self.path is not None:
            doc = {
                "fingerprint": self.fingerprint,
                "jobs": self.jobs,
                "settled": self.settled,
                "scores": self.scores,
                "holds": self.holds,
            }
            write_text(self.path, json.dumps(doc))

    @contextlib.contextmanager
    def kept(self) -> Iterator[None]:
        """Save what the block recorded (holds, live verdicts) if it is interrupted, so a resumed run
        settles those holds and replays those verdicts instead of reserving and paying again."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(OSError):  # the interruption is what propagates
                self.save()
            raise

    def recorded(self, cid: str) -> dict[str, Any] | None:
        """The result line recorded for ``cid`` (a finished job's), or None."""
        for job in self.jobs:
            if cid in job["ids"] and job.get("status") in TERMINAL:
                line: dict[str, Any] = job["results"].get(cid, {"missing": job["status"]})
                return line
        return None

    def open_job(self, tier: str, ids: Sequence[str]) -> dict[str, Any] | None:
        """A job submitted for these requests that has not been downloaded yet."""
        for job in self.jobs:
            if job["tier"] == tier and job.get("status") not in TERMINAL and set(job["ids"]) == set(ids):
                return job
        return None

    def submitted(self, cid: str) -> bool:
        """Whether a job that the provider created carries ``cid``."""
        return any(job.get("batch_id") and cid in job["ids"] for job in self.jobs)


class _Budget(Budget):
    """The cascade's budget, detachable: once the driver stops (a crash, Ctrl-C), the loop's settles
    of open holds are left undone. The jobs already submitted still run and bill what they
    produce, not a worst case: their holds live for :data:`BATCH_HOLD_TTL` (the caps count them
    while the jobs run), are recorded in the state, and a resumed run settles them at what the jobs
    really cost."""

    def settle(self, hold: str, actual: Decimal) -> None:
        if self.__dict__.get("detached"):
            get_logger().info("cascade.batch_hold_left", hold=hold)
            return
        Budget.settle(self, hold, actual)

    def detach(self) -> None:
        object.__setattr__(self, "detached", True)


def batch_settings(s: Settings) -> Settings:
    """``s`` with every tier priced at its provider's batch price (and a detachable budget).

    Hedges are dropped: a batch job has no latency to hedge, and a hedged tier's call would go
    out live (billed at the list price, charged here at the batch price). So are retries: a row's
    result line is final (a retry would replay the same line, and charge a billed one again)."""
    b = s.budget
    kw = {f.name: getattr(b, f.name) for f in fields(b) if f.init}
    budget = _Budget(**{**kw, "hold_ttl": max(b.hold_ttl, BATCH_HOLD_TTL)})
    object.__setattr__(budget, "_state", b._state)  # the same journal and waiters
    hedged = [t.name for t in s.tiers if t.hedge is not None]
    if hedged:
        get_logger().info("cascade.batch_hedge_dropped", tiers=hedged)
    tiers = tuple(
        replace(
            t, price=batch_price(t.provider_kind, t.price), hedge=None, retry=replace(t.retry, attempts=1)
        )
        for t in s.tiers
    )
    return replace(s, tiers=tiers, budget=budget)


def _anthropic(tier: Tier) -> bool:
    """The tier goes through Anthropic Message Batches (else the OpenAI Batch API)."""
    from cascade.providers.anthropic import AnthropicProvider

    return isinstance(tier.provider, AnthropicProvider)


def _batchable(provider: object) -> bool:
    """``provider`` has a batch API here: OpenAI format or Anthropic, not streaming."""
    from cascade.providers.anthropic import AnthropicProvider
    from cascade.providers.openai import OpenAIProvider

    ok = isinstance(provider, OpenAIProvider | AnthropicProvider)
    return ok and not getattr(provider, "stream", False)


def _judges(tiers: Sequence[Tier]) -> dict[str, Tier]:
    """Per tier name, its judge scorer's provider as a tier of its own at the batch price, when the
    judge's calls can go in batch jobs (else the judge calls live)."""
    from cascade.engine.reuse import ReusingProvider
    from cascade.providers.anthropic import AnthropicProvider

    out = {}
    for t in tiers:
        judge = t.scorer
        if not isinstance(judge, JudgeScorer):
            continue
        p = judge.provider
        p = p.inner if isinstance(p, ReusingProvider) else p  # no sample reuse across a batch job
        if _batchable(p):
            kind = "anthropic" if isinstance(p, AnthropicProvider) else str(getattr(p, "kind", ""))
            out[t.name] = Tier(f"{t.name}.judge", p, batch_price(kind, judge.price), provider_kind=kind)
    return out


def _check(tiers: Sequence[Tier]) -> None:
    for t in tiers:
        if not _batchable(t.provider):
            raise ConfigurationError(
                f"--provider-batch: tier {t.name!r} (provider {t.provider_kind or '?'}) has no batch API"
                " here; only openai, openai_compatible and anthropic tiers without streaming"
            )
        if t.samples > 1 and not _anthropic(t) and not getattr(t.provider, "supports_n", True):
            raise ConfigurationError(
                f"--provider-batch: tier {t.name!r} samples {t.samples} answers but its server does not"
                " honour n (options: supports_n: true, if it does)"
            )


def _fingerprint(s: Settings, requests: Sequence[Request]) -> str:
    h = hashlib.sha256(json.dumps([s.name, [t.name for t in s.tiers]]).encode())
    for r in requests:
        h.update(repr(r.messages).encode())
    return h.hexdigest()[:32]


def _load(path: Path | None, fingerprint: str) -> _State:
    if path is None or not path.exists():
        return _State(path, fingerprint)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        state = _State(
            path,
            str(doc["fingerprint"]),
            list(doc["jobs"]),
            dict(doc["settled"]),
            dict(doc.get("scores", {})),
            dict(doc.get("holds", {})),
        )
        for job in state.jobs:  # every field the driver reads, of the right type
            if not (
                isinstance(job["tier"], str)
                and isinstance(job["ids"], list)
                and isinstance(job["batch_id"], str | None)
                and isinstance(job["status"], str)
                and isinstance(job.get("results", {}), dict)
                and isinstance(job.get("samples", {}), dict)
                and isinstance(job.get("nonce", ""), str)
                and isinstance(job.get("since", 0.0), float | int)
                and (job["status"] not in TERMINAL or isinstance(job.get("results"), dict))
                and all(isinstance(i, str) for i in job["ids"])
                and all(isinstance(v, dict) for v in job.get("results", {}).values())
                and all(type(v) is int and v >= 0 for v in job.get("samples", {}).values())
            ):
                raise TypeError("a job entry of the wrong shape")
        if not all(isinstance(v, int) for v in state.settled.values()):
            raise TypeError("settled counts that are not integers")
        for saved in state.scores.values():
            _rated(saved)  # every recorded verdict reads back
        if not all(isinstance(h, str) and hold_buckets(h) for h in state.holds.values()):
            raise TypeError("a recorded hold that is not a ledger's hold id")
    except (OSError, ValueError, KeyError, TypeError, ArithmeticError) as err:
        raise BatchStateError(f"{path}: not a batch state file ({type(err).__name__}: {err})") from None
    if state.fingerprint != fingerprint:
        raise BatchStateError(f"{path}: the state of another job (other prompts or policy); remove it")
    return state


def run_batch(
    settings: Settings,
    prompts: Iterable[Prompt],
    *,
    budget_key: str | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
    state: str | Path | None = None,
    poll_interval: float = 30.0,
    on_round: Callable[[str, int], None] | None = None,
) -> BatchReport:
    """Run ``prompts`` through the cascade ``settings``, each tier round as one provider batch job.

    ``state``: the resumable state file (recommended for real jobs). ``on_round(tier, n)`` is
    told of each job as it is submitted (progress).
    """
    _check(settings.tiers)
    s = batch_settings(settings)
    items = list(prompts)
    requests = [
        Request.of(p, budget_key=budget_key, metadata=metadata[i] if metadata else None)
        for i, p in enumerate(items)
    ]
    st = _load(Path(state) if state is not None else None, _fingerprint(s, requests))
    rows = [_Row(i, steps(s, r), settled=st.settled.get(str(i), 0)) for i, r in enumerate(requests)]
    jobs: list[str] = [str(j["batch_id"]) for j in st.jobs if j.get("batch_id")]
    judges = _judges(s.tiers)
    try:
        unmatched = _rounds(rows, s, judges, st, poll_interval, on_round, jobs)
    except BaseException:
        assert isinstance(s.budget, _Budget)
        s.budget.detach()  # submitted jobs go on: their holds are settled by the resumed run
        for row in rows:
            row.gen.close()
        raise
    results = [r.result for r in rows]
    assert all(r is not None for r in results)
    done: list[CascadeResult | CascadeError] = [r for r in results if r is not None]
    cost, live = _costs(done, s, judges)
    return BatchReport(done, jobs, cost, live, unmatched)


def _rounds(
    rows: list[_Row],
    s: Settings,
    judges: dict[str, Tier],
    st: _State,
    poll_interval: float,
    on_round: Callable[[str, int], None] | None,
    jobs: list[str],
) -> int:
    """Every row to its end, one batch job per round (a judged tier's round: its answers' job, then
    its verdicts' job); the count of unmatched result lines."""
    tier_index = {t.name: i for i, t in enumerate(s.tiers)}
    log = get_logger()
    unmatched = 0
    step = _Step(st, tier_index, judges)
    with st.kept():
        for row in rows:
            step.advance(row, None)
    while True:
        waiting = [
            (_waits_for(r, tier_index), r) for r in rows if r.pending is not None or r.rating is not None
        ]
        if not waiting:
            break
        first = min(w for w, _ in waiting)
        batch = [r for w, r in waiting if w == first]
        index, judged = first
        tier = judges[s.tiers[index].name] if judged else s.tiers[index]
        ids = [_cid(r, index) + ("-judge" if judged else "") for r in batch]
        calls = [_request(r) for r in batch]
        job = st.open_job(tier.name, ids)
        if job is None or job["batch_id"] is None:
            try:
                with tier.provider.mapped():  # type: ignore[attr-defined]
                    job = _submit(tier, calls, ids, st, job, poll_interval)
            except Exception as exc:
                unsent = [r for _, r in waiting if not st.submitted(_round_cid(r, tier_index))]
                _not_submitted(exc, tier, unsent, st, s.budget, adopting=job is not None)
                raise
            jobs.append(job["batch_id"])
            if on_round is not None:
                on_round(tier.name, len(batch))
        log.info("cascade.batch_round", tier=tier.name, rows=len(batch), batch_id=job["batch_id"])
        try:
            with st.kept(), tier.provider.mapped():  # type: ignore[attr-defined]
                unmatched += _finish(tier, job, poll_interval, st)
        except ProviderError as err:
            _not_read(err, tier, job, st)
            raise
        with st.kept():
            for row, cid in zip(batch, ids, strict=True):
                step.resume(row, st.recorded(cid))
        for row in batch:  # their calls so far are settled: a rerun neither reserves nor settles them
            st.settled[str(row.index)] = row.calls - (row.pending is not None) - (row.rating is not None)
        st.save()
    return unmatched


def _waits_for(row: _Row, index: dict[str, int]) -> tuple[int, bool]:
    """The round ``row`` waits for: its tier's index, and whether it is that tier's judge round."""
    if row.pending is not None:
        return index[row.pending.tier.name], False
    assert row.rating is not None
    return index[row.rating[0].tier.name], True


def _request(row: _Row) -> tuple[Request, int]:
    """What ``row`` sends in its round's job: its call's request and samples, or its judge request."""
    if row.pending is not None:
        return row.pending.request, row.pending.n
    assert row.rating is not None
    return row.rating[1], 1


def _cid(row: _Row, tier: int) -> str:
    return f"row-{row.index}-tier-{tier}"


def _round_cid(row: _Row, index: dict[str, int]) -> str:
    """The custom_id of what ``row`` sends in the round it waits for."""
    tier, judged = _waits_for(row, index)
    return _cid(row, tier) + ("-judge" if judged else "")


def _not_submitted(
    err: Exception, tier: Tier, rows: Sequence[_Row], st: _State, budget: Budget, *, adopting: bool
) -> None:
    """A round whose job could not be submitted (``err``: the provider's failure, already mapped, or
    a bug), before ``err`` propagates: the holds of ``rows`` (waiting for rounds not submitted) are
    released (settled at $0: nothing was sent, and the state no longer names them) when the provider
    refused for certain (a 4xx that is not retried: authentication, permission, a bad request) and
    no earlier run's job was being looked for (``adopting``: a refused listing says nothing of that
    job); else kept in the state, for a resumed run that adopts the job (the provider may have
    created it) or settles them. A provider's error's message says which."""
    status = getattr(err, "status_code", None)
    certain = isinstance(err, PermanentProviderError) and status is not None and 400 <= status < 500
    refused = certain and not adopting
    held = {r.hold for r in rows if r.hold is not None}
    if refused:
        for hold in held:
            budget.settle(hold, ZERO)
        st.holds = {k: h for k, h in st.holds.items() if h not in held}
        advice = f"no job was created; the holds of {len(held)} call(s) are released"
    elif st.path is not None:
        advice = (
            f"the job may have been created: run the same command again (same state file {st.path})"
            f" to adopt it or settle its holds, which otherwise expire in {BATCH_HOLD_TTL / 3600:.0f} h"
        )
    else:
        advice = f"the job may have been created; its holds expire in {BATCH_HOLD_TTL / 3600:.0f} h"
    with contextlib.suppress(OSError):  # the submission's error is what propagates
        st.save()
    get_logger().warning(
        "cascade.batch_not_submitted",
        tier=tier.name,
        error=type(err).__name__,
        refused=refused,
        holds=len(held),
        released=len(held) if refused else 0,
    )
    if isinstance(err, ProviderError):  # else not the provider's word (a bug): as it is, its holds kept
        err.args = (f"{err.args[0]}; {advice}",)


def _not_read(err: ProviderError, tier: Tier, job: dict[str, Any], st: _State) -> None:
    """A failure while polling a submitted job or downloading its results, before ``err``
    propagates. The job exists and may complete (and bill): the rows' holds stay held (for
    :data:`BATCH_HOLD_TTL`) and the state, saved, keeps the job unread, so the same command run
    again with the same state file polls that job and reads its results (nothing sent twice)."""
    batch_id = job["batch_id"]
    ttl = f"{BATCH_HOLD_TTL / 3600:.0f} h"
    if st.path is not None:
        advice = (
            f"job {batch_id} was submitted and may complete: run the same command again (same state"
            f" file {st.path}) to read its results; its holds are kept meanwhile (they expire in {ttl})"
        )
    else:
        advice = (
            f"job {batch_id} was submitted and may complete, but without a state file no later run"
            f" can read it; its holds expire in {ttl}"
        )
    get_logger().warning(
        "cascade.batch_not_read",
        tier=tier.name,
        batch_id=batch_id,
        error=type(err).__name__,
        status_code=err.status_code,
        resumable=st.path is not None,
    )
    err.args = (f"{err.args[0]}; {advice}",)


@dataclass
class _Step:
    """Runs rows' generators between batch jobs, replaying the results recorded in the state."""

    st: _State
    index: dict[str, int]
    judges: dict[str, Tier]

    def resume(self, row: _Row, line: dict[str, Any] | None) -> None:
        """Give ``row`` its round's result line (or its absence) and run it to its next round."""
        if row.pending is not None:
            call, row.pending = row.pending, None
            return self.advance(row, _outcome(call.tier, call.request, call.n, line))
        assert row.rating is not None
        (rate, sub), row.rating = row.rating, None
        self.advance(row, _judged(self.judges[rate.tier.name], rate, sub, line))

    def advance(self, row: _Row, outcome: Outcome | None) -> None:
        """Run ``row``'s generator to its next call of a tier or of a batched judge (replaying
        recorded results) or to its end."""
        gen, st = row.gen, self.st
        try:
            action = gen.send(outcome)  # type: ignore[arg-type]  # None starts a fresh generator
            while True:
                if isinstance(action, Call):
                    row.calls += 1
                    recorded = st.recorded(_cid(row, self.index[action.tier.name]))
                    if recorded is None:
                        row.pending = action
                        return
                    action = gen.send(_outcome(action.tier, action.request, action.n, recorded))
                elif isinstance(action, Rate) and action.tier.name in self.judges:
                    judge = action.tier.scorer
                    assert isinstance(judge, JudgeScorer)
                    try:
                        sub = judge.request_for(action.request, action.completion)
                    except JudgeError as err:
                        action = gen.send(RateOutcome(None, err, 0.0))
                        continue
                    recorded = st.recorded(_cid(row, self.index[action.tier.name]) + "-judge")
                    if recorded is None:
                        row.rating = (action, sub)
                        return
                    action = gen.send(_judged(self.judges[action.tier.name], action, sub, recorded))
                elif isinstance(action, Rate):  # a scorer that runs here: paid once, then replayed
                    key = _cid(row, self.index[action.tier.name]) + "-score"
                    saved = st.scores.get(key)
                    if saved is not None:
                        action = gen.send(_rated(saved))
                        continue
                    rated = execute(action)
                    assert isinstance(rated, RateOutcome)
                    st.scores[key] = _saved(rated)
                    action = gen.send(rated)
                elif isinstance(action, Reserve) and row.calls < row.settled:
                    row.hold = None
                    action = gen.send(Reserved(None, None))  # reserved and settled by an earlier run
                elif isinstance(action, Reserve):
                    key = f"{row.index}-{row.calls}"  # the hold of the row's next call
                    hold = st.holds.get(key)
                    row.hold = hold
                    if hold is not None:  # an earlier run's: settled by this run (once: idempotent)
                        action = gen.send(Reserved(hold, None))
                        continue
                    held = execute(action)
                    assert isinstance(held, Reserved)
                    row.hold = held.hold
                    if held.hold is not None and hold_buckets(held.hold):  # a durable ledger's hold
                        st.holds[key] = held.hold
                    action = gen.send(held)
                else:
                    action = gen.send(execute(action))
        except StopIteration as stop:
            row.result = stop.value
        except CascadeError as err:
            row.result = err


_SCORER_ERRORS: dict[str, type[ScorerError]] = {"ScorerError": ScorerError, "JudgeError": JudgeError}


def _saved(rated: RateOutcome) -> dict[str, Any]:
    """A live scorer's verdict as the state file records it (JSON; money as exact strings)."""
    score, err = rated.score, rated.error
    if score is not None:
        return {
            "value": score.value,
            "chosen": score.chosen,
            "cost": str(score.cost),
            "usage": asdict(score.usage),
            "detail": json.loads(json.dumps(dict(score.detail), default=str)),
            "latency_s": rated.latency_s,
        }
    assert err is not None
    cost = err.cost if isinstance(err, ScorerError) else ZERO
    return {"error": str(err), "kind": type(err).__name__, "cost": str(cost), "latency_s": rated.latency_s}


def _rated(saved: Any) -> RateOutcome:
    """A verdict recorded by :func:`_saved` (TypeError, ValueError or KeyError when malformed)."""
    if not isinstance(saved, dict):
        raise TypeError("a recorded verdict that is not an object")
    latency = float(saved["latency_s"])
    cost = Decimal(str(saved["cost"]))
    if "error" in saved:
        kind, text = _SCORER_ERRORS.get(str(saved["kind"])), str(saved["error"])
        err = kind(text, cost=cost) if kind else ScorerError(f"{saved['kind']}: {text}", cost=cost)
        return RateOutcome(None, err, latency)
    usage = Usage(**{k: int(v) for k, v in dict(saved["usage"]).items()})
    detail = saved["detail"]
    if not isinstance(detail, dict):
        raise TypeError("a recorded verdict's detail that is not an object")
    score = Score(float(saved["value"]), int(saved["chosen"]), cost, usage, detail)
    return RateOutcome(score, None, latency)


def _judged(judge: Tier, rate: Rate, sub: Request, line: dict[str, Any] | None) -> RateOutcome:
    """A judge's result line as the loop's outcome of the row's scoring, at the judge's batch price."""
    scorer = rate.tier.scorer
    assert isinstance(scorer, JudgeScorer)
    got = _outcome(judge, sub, 1, line)
    if got.completion is None:
        err = got.error
        usage = getattr(err, "usage", None) or Usage()
        cost = judge.price.cost(usage) if usage != Usage() else ZERO
        return RateOutcome(
            None, JudgeError(f"judge failed in the batch job: {err}", cost=cost, usage=usage), 0.0
        )
    completion = replace(got.completion, cost=judge.price.cost(got.completion.usage))
    try:
        return RateOutcome(scorer.verdict(completion), None, 0.0)
    except JudgeError as err:
        return RateOutcome(None, err, 0.0)


def _body(tier: Tier, request: Request, n: int) -> dict[str, Any]:
    """The chat-completions body the tier's provider would send for ``request``."""
    kw = tier.provider.request_kwargs(request, n)  # type: ignore[attr-defined]
    kw.pop("stream_options", None)
    extra = kw.pop("extra_body", None) or {}
    return {**kw, **extra}


def _submit(
    tier: Tier,
    batch: Sequence[tuple[Request, int]],
    ids: Sequence[str],
    st: _State,
    started: dict[str, Any] | None,
    poll_interval: float,
) -> dict[str, Any]:
    """Upload the round's requests and create its batch job; recorded before anything waits on it.

    ``started``: a job of these requests whose file was uploaded by an earlier run that stopped
    before recording its batch: the batch made from that file, when the provider lists one, is
    adopted; else it is created from the uploaded file (nothing is sent twice).
    """
    if _anthropic(tier):
        return _submit_anthropic(tier, batch, ids, st, started, poll_interval)
    client = tier.provider.client  # type: ignore[attr-defined]
    if started is not None:
        record = started
        for found in client.batches.list(limit=100):
            if found.input_file_id == record["file_id"]:
                record.update(batch_id=found.id, status=_unread(found.status))
                st.save()
                return record
    else:
        record = {"tier": tier.name, "batch_id": None, "ids": list(ids), "status": "uploading"}
        record["file_id"] = _upload(tier, batch, ids)
        st.jobs.append(record)
        st.save()  # a crash from here on finds the file's batch (or makes it) on resume
    job = client.batches.create(
        input_file_id=record["file_id"],
        endpoint=ENDPOINT,
        completion_window="24h",
        metadata={"cascade_tier": tier.name},
    )
    record.update(batch_id=job.id, status=_unread(job.status))
    st.save()
    return record


def _unread(status: str) -> str:
    """A submitted job's status as recorded before its results are read: never a terminal one
    (a job whose status is terminal has its results recorded; :func:`_finish` records both)."""
    return "in_progress" if status in TERMINAL else str(status)


def _upload(tier: Tier, batch: Sequence[tuple[Request, int]], ids: Sequence[str]) -> str:
    """The round's requests as an uploaded JSONL file (OpenAI); its file id."""
    lines = []
    for (request, n), cid in zip(batch, ids, strict=True):
        body = _body(tier, request, n)
        lines.append(json.dumps({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body}))
    client = tier.provider.client  # type: ignore[attr-defined]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    upload = client.files.create(file=(f"cascade-{tier.name}.jsonl", data), purpose="batch")
    return str(upload.id)


SINCE_SLACK = 600.0  # seconds of clock skew allowed when looking for a batch created by a crashed run


def _sid(cid: str, k: int, nonce: str) -> str:
    """An Anthropic request's custom_id: the row's id, the sample, the job's nonce (``[a-zA-Z0-9_-]``)."""
    return f"{cid}-s{k}-{nonce}" if nonce else f"{cid}-s{k}"


def _submit_anthropic(
    tier: Tier,
    batch: Sequence[tuple[Request, int]],
    ids: Sequence[str],
    st: _State,
    started: dict[str, Any] | None,
    poll_interval: float,
) -> dict[str, Any]:
    """Anthropic Message Batches: one request per sample (``cid-sK-nonce``), no ``n``.

    The intent (ids, a random nonce in every custom_id, the time) is recorded before the batch is
    created. ``started``: such an intent of an earlier run that stopped before recording its batch
    id. Message batches carry no metadata, so the batches created since then with as many requests
    are waited for and the one whose results carry the nonce is adopted; else it is created now.
    """
    client = tier.provider.client  # type: ignore[attr-defined]
    if started is not None:
        record = started
        found = _adopt_anthropic(client, record, poll_interval)
        if found is not None:
            record.update(batch_id=found, status="in_progress")
            st.save()
            return record
    else:
        samples = {cid: n for (_, n), cid in zip(batch, ids, strict=True)}
        record = {
            "tier": tier.name,
            "batch_id": None,
            "ids": list(ids),
            "samples": samples,
            "status": "creating",
            "nonce": secrets.token_hex(6),
            "since": time.time(),
        }
        st.jobs.append(record)
        st.save()  # a crash from here on looks for the batch by its nonce on resume
    requests = []
    for (request, n), cid in zip(batch, ids, strict=True):
        kw = tier.provider.request_kwargs(request)  # type: ignore[attr-defined]
        params = {**kw, **(kw.pop("extra_body", None) or {})}
        requests += [{"custom_id": _sid(cid, k, record["nonce"]), "params": params} for k in range(n)]
    job = client.messages.batches.create(requests=requests)
    record.update(batch_id=job.id, status=_unread(job.processing_status))
    st.save()
    return record


def _adopt_anthropic(client: Any, record: dict[str, Any], poll_interval: float) -> str | None:
    """The id of the batch an earlier run created for ``record`` (its nonce in the custom_ids), or None."""
    since = float(record["since"]) - SINCE_SLACK
    size = sum(record["samples"].values())
    for b in client.messages.batches.list(limit=100):  # newest first
        if b.created_at.timestamp() < since:
            break
        if sum(b.request_counts.model_dump().values()) != size:
            continue
        while b.processing_status != "ended":  # results (and so custom_ids) come once it has ended
            time.sleep(poll_interval)
            b = client.messages.batches.retrieve(b.id)
        mark = "-" + str(record["nonce"])
        if any(
            str(getattr(x, "custom_id", "")).endswith(mark) for x in client.messages.batches.results(b.id)
        ):
            get_logger().info("cascade.batch_adopted", batch_id=b.id)
            return str(b.id)
    return None


def _finish_anthropic(tier: Tier, job: dict[str, Any], poll_interval: float, st: _State) -> int:
    """Poll a Message Batch to ``ended``; each row's result is the list of its samples' results."""
    client = tier.provider.client  # type: ignore[attr-defined]
    while True:
        batch = client.messages.batches.retrieve(job["batch_id"])
        if batch.processing_status == "ended":
            break
        time.sleep(poll_interval)
    nonce = str(job.get("nonce", ""))
    wanted = {_sid(cid, k, nonce): (cid, k) for cid, n in job["samples"].items() for k in range(n)}
    got: dict[str, dict[str, Any]] = {}
    unmatched = 0
    for item in client.messages.batches.results(job["batch_id"]):
        cid = getattr(item, "custom_id", None)
        if not isinstance(cid, str) or cid not in wanted or cid in got:  # an untrusted file's id
            unmatched += 1
            continue
        got[cid] = item.model_dump(mode="json")
    results: dict[str, Any] = {}
    for sid, (cid, k) in wanted.items():
        results.setdefault(cid, {"samples": [None] * job["samples"][cid]})["samples"][k] = got.get(sid)
    if unmatched:
        get_logger().warning("cascade.batch_unmatched", batch_id=job["batch_id"], lines=unmatched)
    job["status"] = "ended"
    job["results"] = results
    st.save()
    return unmatched


def _anthropic_outcome(tier: Tier, request: Request, line: dict[str, Any]) -> CallOutcome:
    """A row's samples' results as one call outcome: an error when any sample failed (charged what
    the samples that did answer cost)."""
    from anthropic.types import Message

    from cascade.providers._sdk import merge
    from cascade.providers.anthropic import parse

    parts: list[Completion] = []
    billed = Usage()  # samples that answered but did not parse, with usage: billed all the same
    failed: str | None = None
    for sample in line["samples"]:
        result = (sample or {}).get("result") or {}
        kind = result.get("type") if sample is not None else "missing"
        if kind != "succeeded":
            failed = failed or str(kind)
            continue
        try:
            msg = Message.construct(**result["message"])
            parts.append(parse(msg, 0.0, request, tier.provider.params.max_tokens))  # type: ignore[attr-defined]
        except ProviderError as exc:
            failed = failed or "invalid"
            billed = billed + (exc.usage or Usage())
        except (TypeError, KeyError):
            failed = failed or "malformed"
    if failed is None and parts:
        return CallOutcome(merge(parts), None, 0, 0.0)
    err = ProviderError(f"batch row failed: {failed or 'no samples'}", provider="anthropic")
    err.own_words = True
    usage = sum((p.usage for p in parts), billed)
    if usage != Usage():
        err.usage = usage
        return CallOutcome(None, err, 0, 0.0, (err,))
    return CallOutcome(None, err, 0, 0.0)


def _finish(tier: Tier, job: dict[str, Any], poll_interval: float, st: _State) -> int:
    """Poll ``job`` to its end and record its result lines; the count of unmatched lines."""
    if _anthropic(tier):
        return _finish_anthropic(tier, job, poll_interval, st)
    client = tier.provider.client  # type: ignore[attr-defined]
    log = get_logger()
    while True:
        batch = client.batches.retrieve(job["batch_id"])
        if batch.status in TERMINAL:
            break
        time.sleep(poll_interval)
    results: dict[str, Any] = {}
    unmatched = 0
    wanted = set(job["ids"])
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        text = client.files.content(file_id).text
        for raw in text.splitlines():
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                cid = line["custom_id"]
            except (ValueError, KeyError, TypeError):
                unmatched += 1
                continue
            if not isinstance(cid, str) or cid not in wanted or cid in results:  # untrusted: any JSON
                unmatched += 1
                continue
            results[cid] = line
    if unmatched:
        log.warning("cascade.batch_unmatched", batch_id=job["batch_id"], lines=unmatched)
    log.info(
        "cascade.batch_finished",
        batch_id=job["batch_id"],
        status=batch.status,
        results=len(results),
        missing=len(wanted) - len(results),
    )
    job["status"] = batch.status
    job["results"] = results
    st.save()
    return unmatched


def _outcome(tier: Tier, request: Request, n: int, line: dict[str, Any] | None) -> CallOutcome:
    """A result line (or its absence) as the loop's outcome of the row's call."""
    name = getattr(tier.provider, "name", tier.provider_kind)
    if line is None or "missing" in line:
        status = line["missing"] if line is not None else "unknown"
        err = ProviderError(f"no result in the batch job (job {status})", provider=name)
        err.own_words = True
        return CallOutcome(None, err, 0, 0.0)
    if "samples" in line:
        return _anthropic_outcome(tier, request, line)
    response = line.get("response") or {}
    error = line.get("error")
    status = response.get("status_code") if isinstance(response, dict) else None
    if error or status != 200:
        code = error.get("code") if isinstance(error, dict) else None
        err = ProviderError(f"batch row failed: {code or 'error'}", provider=name, status_code=status)
        err.own_words = True
        return CallOutcome(None, err, 0, 0.0)
    from openai.types.chat import ChatCompletion

    try:
        body = ChatCompletion.construct(**response["body"])
        completion = tier.provider.parse(body, 0.0, request, n)  # type: ignore[attr-defined]
    except ProviderError as exc:
        return CallOutcome(None, exc, 0, 0.0, (exc,) if exc.usage is not None else ())
    except (TypeError, KeyError) as exc:
        err = ProviderError(f"malformed batch result: {type(exc).__name__}", provider=name)
        err.own_words = True
        return CallOutcome(None, err, 0, 0.0)
    return CallOutcome(completion, None, 0, 0.0)


def _costs(
    results: Sequence[CascadeResult | CascadeError], s: Settings, judges: dict[str, Tier]
) -> tuple[Decimal, Decimal]:
    """What the run spent (batch prices) and the same usage at list prices."""
    factor = {t.name: BATCH_DISCOUNT.get(t.provider_kind, Decimal(1)) for t in s.tiers}
    judged = {name: BATCH_DISCOUNT.get(j.provider_kind, Decimal(1)) for name, j in judges.items()}
    cost = live = ZERO
    for r in results:
        for a in r.attempts:
            cost += a.total_cost
            live += a.cost / factor.get(a.tier, Decimal(1)) + a.scorer_cost / judged.get(a.tier, Decimal(1))
    return cost, live
