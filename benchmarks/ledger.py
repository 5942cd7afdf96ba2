"""Ledger contention: SQLite and Redis under N processes, a Redis restart, waiting caps, a locked file.

    .venv/bin/python benchmarks/ledger.py           # needs redis-server (apt-get install redis-server)
    .venv/bin/python benchmarks/ledger.py --quick    # fewer requests

1. Contention: N worker processes (1, 2, 4, 8), each with its own ledger client, run reserve + settle
   through ``Budget`` against one day cap sized to stop them about halfway. Each request reserves
   $0.01 and settles a random $0.002-0.01. Prints requests/s, p50/p99 reserve+settle latency, final
   spend vs cap (overspend must be 0), under-use (cap left unspent) and holds left behind.
2. Redis restarted midway (``SHUTDOWN``, then started again on the same port with its append-only
   file): with ``fail_closed`` (no call without a reservation) and with ``fail_open`` (calls go on,
   spend journaled locally and replayed when Redis is back).
3. Caps that are used: 8 processes x 125 concurrent async requests whose worst case is 50x their real
   cost, on a cap that fits 400 real calls; ``on_exceeded: stop`` vs ``wait`` vs ``wait`` with a
   tier ``reserve`` of 2x the real cost. Prints the share of the cap spent.
4. Event-loop stall: another process holds the SQLite write lock for 2 s while an async task reserves
   through ``Budget.areserve``; a ticker measures the longest gap in the event loop (and, for
   comparison, the same reservation made synchronously inside the loop).
5. Failover: 4 processes make calls (reserve, a 2-10 ms provider call, settle) against a primary with
   a replica; 0.8 s in, the primary is demoted with ``REPLICAOF`` (writes paused until the replica
   has caught up, the replica promoted, the old primary pointed at it, writes resumed: in-flight
   scripts now get ``READONLY``), and 1 s later it is promoted back. Prints calls made, calls
   refused, calls served uncapped (made without a hold the ledger saw), settles raised to the caller,
   settles lost (what the provider billed minus what the ledger holds once the journals replayed).
6. Authentication mistakes: the same processes against a server that requires a password, given a
   wrong one from the start, and given the right one until the password is rotated midway (and
   restored 1 s later), in both ``on_ledger_error`` modes.

The Redis server is started here on a free port (``--appendonly yes --appendfsync everysec``).
Timings are noisy on a shared machine: they are medians of what this run saw, not a promise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cascade.budget import Budget, Cap
from cascade.budget.redis import RedisLedger
from cascade.budget.sqlite import SQLiteLedger
from cascade.errors import BudgetExceededError, LedgerError, LedgerUnavailableError
from cascade.protocols import Ledger

WORST = Decimal("0.01")
CENT = Decimal("0.001")


# -- a Redis server of our own -------------------------------------------------------------------


class Server:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("benchmarks/ledger.py: redis-server not found (apt-get install -y redis-server)")
        self.binary = binary
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str, password: str | None = None) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec", *extra]
        if password is not None:
            args += ["--requirepass", password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port, password=password, socket_connect_timeout=0.2)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.RedisError:
                time.sleep(0.02)
        client.close()

    def shutdown(self) -> None:
        """``SHUTDOWN`` (the append-only file is flushed), as an operator's restart would."""
        import redis

        client = redis.Redis(port=self.port)
        with contextlib.suppress(redis.RedisError):
            client.shutdown()
        if self.proc is not None:
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def make_ledger(kind: str, where: str, prefix: str, timeout: float = 0.5) -> Ledger:
    if kind == "sqlite":
        return SQLiteLedger(where, lock_timeout=30)
    return RedisLedger(where, prefix=prefix, timeout=timeout)


# -- 1 and 2: contention ----------------------------------------------------------------------------


@dataclass
class Job:
    kind: str
    where: str
    prefix: str
    cap: Decimal
    requests: int
    seed: int
    on_ledger_error: str = "fail_closed"


def worker(job: Job, start: Any) -> dict[str, Any]:
    rng = random.Random(job.seed)
    ledger = make_ledger(job.kind, job.where, job.prefix)
    budget = Budget(
        caps=(Cap(job.cap, "day"),),
        ledger=ledger,
        hold_ttl=30,
        on_ledger_error=job.on_ledger_error,  # type: ignore[arg-type]
    )
    buckets = budget.buckets("bench", None)
    lat: list[float] = []
    ok = refused = unavailable = 0
    charged = Decimal(0)
    start.wait()
    t0 = time.perf_counter()
    for _ in range(job.requests):
        actual = Decimal(rng.randint(2, 10)) * CENT
        t = time.perf_counter()
        try:
            hold = budget.reserve(buckets, WORST)
        except BudgetExceededError:
            refused += 1
            continue
        except LedgerUnavailableError:
            unavailable += 1  # fail_closed: no call is made
            time.sleep(0.01)
            continue
        budget.settle(hold, actual)
        lat.append(time.perf_counter() - t)
        ok += 1
        charged += actual
    elapsed = time.perf_counter() - t0
    deadline = time.monotonic() + 30
    while budget.journal and time.monotonic() < deadline:  # write what the outage left in the journal
        budget._state.down_until = 0
        budget.replay()
        if budget.journal:
            time.sleep(0.2)
    return {
        "lat": lat,
        "ok": ok,
        "refused": refused,
        "unavailable": unavailable,
        "charged": charged,
        "elapsed": elapsed,
        "journal_left": len(budget.journal),
    }


def _run(out: Any, job: Job, start: Any) -> None:
    out.put(worker(job, start))


def contention(
    kind: str,
    where: str,
    procs: int,
    requests: int,
    restart: Server | None = None,
    on_ledger_error: str = "fail_closed",
) -> dict[str, Any]:
    prefix = f"bench:{os.getpid()}:{time.monotonic_ns()}"
    total = procs * requests
    cap = WORST * total * Decimal("0.6") / 2  # the mean actual is 0.6 x worst: stops them about halfway
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    out: Any = ctx.Queue()
    jobs = [Job(kind, where, prefix, cap, requests, seed, on_ledger_error) for seed in range(procs)]
    workers = [ctx.Process(target=_run, args=(out, j, start)) for j in jobs]
    for w in workers:
        w.start()
    time.sleep(0.3)
    start.set()
    if restart is not None:
        time.sleep(0.15)
        restart.shutdown()
        time.sleep(0.5)
        restart.start()
    results = [out.get(timeout=300) for _ in workers]
    wall = max(r["elapsed"] for r in results)
    for w in workers:
        w.join()
    ledger = make_ledger(kind, where, prefix)
    bucket = Budget(caps=(Cap(cap, "day"),)).buckets("bench", None)[0][0]
    spent = ledger.spent(bucket)
    held = ledger.held(bucket)  # type: ignore[attr-defined]
    lat = sorted(x for r in results for x in r["lat"])
    ok = sum(r["ok"] for r in results)
    charged = sum((r["charged"] for r in results), Decimal(0))
    return {
        "kind": kind,
        "procs": procs,
        "ok": ok,
        "refused": sum(r["refused"] for r in results),
        "unavailable": sum(r["unavailable"] for r in results),
        "rps": (ok + sum(r["refused"] for r in results)) / wall,
        "p50": lat[len(lat) // 2] * 1000 if lat else float("nan"),
        "p99": lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan"),
        "cap": cap,
        "spent": spent,
        "charged": charged,
        "overspend": max(spent - cap, Decimal(0)),
        "underuse": (cap - spent) / cap if spent <= cap else Decimal(0),
        "held": held,
        "journal_left": sum(r["journal_left"] for r in results),
    }


def show(r: dict[str, Any], label: str = "") -> None:
    print(
        f"| {label or r['kind']} | {r['procs']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} |"
        f" ${r['spent']:.3f} / ${r['cap']:.3f} | ${r['overspend']:.3f} | {float(r['underuse']) * 100:.2f}% |"
        f" ${r['held']:.3f} | {r['ok']} ok, {r['refused']} refused, {r['unavailable']} unavailable |"
        f" {'yes' if r['spent'] == r['charged'] else 'NO: ' + str(r['charged'])} |"
    )


# -- 3: caps that are used ------------------------------------------------------------------------


REAL = Decimal("0.0001")


def wait_worker(
    kind: str, where: str, prefix: str, cap: Decimal, mode: str, worst: Decimal, n: int
) -> Decimal:
    ledger = make_ledger(kind, where, prefix)
    budget = Budget(
        caps=(Cap(cap, "total"),),
        ledger=ledger,
        on_exceeded="wait" if mode.startswith("wait") else "stop",
        max_wait=30,
    )
    buckets = budget.buckets("bench", None)

    async def one() -> Decimal:
        try:
            hold = await budget.areserve(buckets, worst)
        except BudgetExceededError:
            return Decimal(0)
        await asyncio.sleep(0.005)  # the model call
        await budget.asettle(hold, REAL)
        return REAL

    async def main() -> Decimal:
        return sum(await asyncio.gather(*(one() for _ in range(n))), Decimal(0))

    return asyncio.run(main())


def caps_used(kind: str, where: str, procs: int = 8, per_proc: int = 125) -> None:
    cap = REAL * 400
    print(
        f"\n{kind}: {procs} processes x {per_proc} concurrent requests, real cost ${REAL},"
        f" cap ${cap} (400 calls)"
    )
    print("| mode | worst case reserved | calls made | spent / cap | share of cap spent | seconds |")
    print("|---|---|---|---|---|---|")
    for mode, worst in (("stop", REAL * 50), ("wait", REAL * 50), ("wait + reserve 2x", REAL * 2)):
        prefix = f"bench:{os.getpid()}:{time.monotonic_ns()}"
        if kind == "sqlite":
            where = str(Path(tempfile.mkdtemp()) / "wait.sqlite3")
        t = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            got = pool.starmap(wait_worker, [(kind, where, prefix, cap, mode, worst, per_proc)] * procs)
        elapsed = time.perf_counter() - t
        spent = make_ledger(kind, where, prefix).spent(
            Budget(caps=(Cap(cap, "total"),)).buckets("bench", None)[0][0]
        )
        assert spent == sum(got, Decimal(0))
        assert spent <= cap
        print(
            f"| {mode} | {worst / REAL:.0f}x | {spent / REAL:.0f} | ${spent} / ${cap} |"
            f" {float(spent / cap) * 100:.1f}% | {elapsed:.2f} |"
        )


# -- 4: event-loop stall ---------------------------------------------------------------------------


def stall(path: Path, hold_s: float = 2.0) -> None:
    ledger = SQLiteLedger(path, lock_timeout=30)
    budget = Budget(caps=(Cap(Decimal(1000), "day"),), ledger=ledger)
    buckets = budget.buckets("bench", None)
    budget.settle(budget.reserve(buckets, CENT), CENT)  # the file exists

    def locker(ready: threading.Event) -> subprocess.Popen[bytes]:
        code = (
            "import sqlite3, time\n"
            f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "db.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            f"time.sleep({hold_s})\n"
            "db.execute('ROLLBACK')\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.readline()
        proc.stdout.close()
        return proc

    async def run(sync_in_loop: bool | None) -> tuple[float, float]:
        worst = 0.0
        stop = asyncio.Event()
        proc = locker(threading.Event())  # the lock is held from here (started before the ticker)

        async def ticker() -> None:
            nonlocal worst
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                worst = max(worst, now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        t = time.perf_counter()
        if sync_in_loop is None:
            await asyncio.sleep(hold_s - 0.05)  # no ledger call: the gaps this machine shows anyway
        elif sync_in_loop:
            budget.settle(budget.reserve(buckets, CENT), CENT)  # what the engine did before: blocks the loop
        else:
            await budget.asettle(await budget.areserve(buckets, CENT), CENT)
        waited = time.perf_counter() - t
        stop.set()
        await tick
        proc.wait()
        return worst, waited

    print(f"\nSQLite write lock held {hold_s:g} s by another process while an async task reserves:")
    print("(median of 3 runs; the first row is the noise floor of this machine: no ledger call at all)")
    print("| how the reservation runs | longest event-loop gap | reservation waited |")
    print("|---|---|---|")
    modes: tuple[tuple[str, bool | None], ...] = (
        ("no reservation (ticker alone)", None),
        ("Budget.areserve (a worker thread)", False),
        ("ledger.reserve inside the loop", True),
    )
    for label, sync in modes:
        runs = sorted(asyncio.run(run(sync)) for _ in range(3))
        gap, waited = runs[1]
        print(f"| {label} | {gap * 1000:.1f} ms | {waited:.2f} s |")


# -- 5 and 6: failover and authentication mistakes --------------------------------------------------


@dataclass
class CallJob:
    url: str
    prefix: str
    seconds: float
    seed: int
    on_ledger_error: str


def call_worker(job: CallJob, start: Any, out: Any) -> None:
    """Calls for ``job.seconds``: reserve, a provider call (billed), settle; then replay the journal."""
    rng = random.Random(job.seed)
    budget = Budget(
        caps=(Cap(Decimal(1000), "total"),),
        ledger=RedisLedger(job.url, prefix=job.prefix, timeout=0.2),
        hold_ttl=30,
        on_ledger_error=job.on_ledger_error,  # type: ignore[arg-type]
        journal_dir=os.environ["CASCADE_JOURNAL"] + f"/{job.prefix.replace(':', '_')}-{job.seed}",
    )
    buckets = budget.buckets("bench", None)
    r = {"calls": 0, "refused": 0, "mistakes": 0, "uncapped": 0, "deferred": 0, "settle_raised": 0}
    r["billed"] = Decimal(0)
    start.wait()
    end = time.monotonic() + job.seconds
    while time.monotonic() < end:
        try:
            hold = budget.reserve(buckets, WORST)
        except LedgerUnavailableError:
            r["refused"] += 1  # fail_closed: no call is made
            time.sleep(0.01)
            continue
        except LedgerError:
            r["mistakes"] += 1  # a wrong password: no call is made, in every mode
            time.sleep(0.01)
            continue
        if hold in budget._state.local_holds:
            r["uncapped"] += 1  # fail_open: a call the ledger never saw a hold for
        time.sleep(rng.uniform(0.002, 0.01))  # the provider call: billed from here
        actual = Decimal(rng.randint(2, 10)) * CENT
        r["calls"] += 1
        r["billed"] += actual
        try:
            budget.settle(hold, actual)
        except LedgerError:
            r["settle_raised"] += 1  # lost unless the caller retries it
        else:
            r["deferred"] += any(h == hold for h, _ in budget.journal)  # journaled, replayed later
    deadline = time.monotonic() + 30
    while budget.journal and time.monotonic() < deadline:
        budget._state.down_until = 0
        with contextlib.suppress(LedgerError):  # earlier versions raised a READONLY replay
            budget.replay()
        if budget.journal:
            time.sleep(0.2)
    r["journal_left"] = len(budget.journal)
    out.put(r)


def _demote(old: Server, new: Server, wait: bool = True) -> None:
    """``old`` becomes a replica of ``new`` (promoted); with ``wait``, once ``new`` has every write
    ``old`` took (without, writes ``old`` acknowledged but had not replicated yet are lost: Redis
    replication is asynchronous)."""
    import redis

    a = redis.Redis(port=old.port)
    b = redis.Redis(port=new.port)
    if wait:
        a.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
        target = int(a.info("replication")["master_repl_offset"])
        for _ in range(5000):
            if int(b.info("replication").get("slave_repl_offset", -1)) >= target:
                break
            time.sleep(0.001)
    b.execute_command("REPLICAOF", "NO", "ONE")
    a.execute_command("REPLICAOF", "127.0.0.1", str(new.port))
    if wait:
        a.execute_command("CLIENT", "UNPAUSE")  # the paused scripts run now, on a replica: READONLY
    a.close()
    b.close()


def call_run(
    server: Server,
    url: str,
    mode: str,
    fault: Any,
    procs: int = 4,
    seconds: float = 3.0,
    password: str | None = None,
) -> dict[str, Any]:
    prefix = f"bench:{os.getpid()}:{time.monotonic_ns()}"
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    out: Any = ctx.Queue()
    workers = [
        ctx.Process(target=call_worker, args=(CallJob(url, prefix, seconds, seed, mode), start, out))
        for seed in range(procs)
    ]
    for w in workers:
        w.start()
    time.sleep(0.3)
    start.set()
    if fault is not None:
        fault()
    results = [out.get(timeout=120) for _ in workers]
    for w in workers:
        w.join()
    good = server.url if password is None else server.url.replace("//", f"//:{password}@")
    ledger = RedisLedger(good, prefix=prefix)
    spent = ledger.spent(Budget(caps=(Cap(Decimal(1000), "total"),)).buckets("bench", None)[0][0])
    total = {k: sum((r[k] for r in results), type(results[0][k])()) for k in results[0]}
    total["spent"] = spent
    total["lost"] = total["billed"] - spent
    return total


def show_calls(label: str, mode: str, r: dict[str, Any]) -> None:
    print(
        f"| {label} | {mode} | {r['calls']} | {r['refused']} | {r['mistakes']} | {r['uncapped']} |"
        f" {r['deferred']} | {r['settle_raised']} | ${r['billed']:.3f} | ${r['spent']:.3f} |"
        f" ${r['lost']:.3f} | {r['journal_left']} |"
    )


def faults(workdir: Path) -> None:
    print("\nFailover and authentication mistakes: 4 processes, 3 s of calls (reserve $0.01, call, settle)")
    print(
        "| run | on_ledger_error | calls made | refused (outage) | refused (mistake) | served uncapped |"
        " settles journaled | settles raised | provider billed | ledger spent | settles lost | journal left |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    import redis

    for wait in (True, False):
        primary, replica = Server(workdir / f"a{wait}"), Server(workdir / f"b{wait}")
        for s in (primary, replica):
            s.workdir.mkdir()
        primary.start()
        replica.start("--replicaof", "127.0.0.1", str(primary.port))
        link = redis.Redis(port=replica.port)
        while link.info("replication").get("master_link_status") != "up":  # the first sync is done
            time.sleep(0.05)
        link.close()
        try:

            def failover(wait: bool = wait, primary: Server = primary, replica: Server = replica) -> None:
                time.sleep(0.8)
                _demote(primary, replica, wait)
                time.sleep(1.0)
                _demote(replica, primary)  # failback: the url the workers use is writable again

            label = "primary demoted by REPLICAOF" + ("" if wait else ", replica not waited for")
            show_calls(label, "fail_closed", call_run(primary, primary.url, "fail_closed", failover))
        finally:
            primary.stop()
            replica.stop()
    locked = Server(workdir / "auth")
    locked.workdir.mkdir()
    locked.start(password="right")
    try:
        admin = redis.Redis(port=locked.port, password="right")
        wrong = locked.url.replace("//", "//:wrong@")
        good = locked.url.replace("//", "//:right@")

        def rotate() -> None:
            time.sleep(0.8)
            admin.config_set("requirepass", "rotated")
            admin.client_kill_filter(_type="normal", skipme=True)  # every client must log in again
            time.sleep(1.0)
            admin.config_set("requirepass", "right")

        for mode in ("fail_closed", "fail_open"):
            show_calls("wrong password", mode, call_run(locked, wrong, mode, None, password="right"))
            admin = redis.Redis(port=locked.port, password="right")
            show_calls(
                "password rotated midway", mode, call_run(locked, good, mode, rotate, password="right")
            )
        admin.close()
    finally:
        locked.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only-stall", action="store_true", help="only the event-loop stall run")
    parser.add_argument("--only-faults", action="store_true", help="only the failover and password runs")
    args = parser.parse_args()
    if args.only_stall:
        workdir = Path(tempfile.mkdtemp(prefix="cascade-ledger-bench-"))
        stall(workdir / "stall.sqlite3")
        shutil.rmtree(workdir, ignore_errors=True)
        return
    if args.only_faults:
        workdir = Path(tempfile.mkdtemp(prefix="cascade-ledger-bench-"))
        os.environ["CASCADE_JOURNAL"] = str(workdir / "journal")
        try:
            faults(workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    requests = 250 if args.quick else 1000
    workdir = Path(tempfile.mkdtemp(prefix="cascade-ledger-bench-"))
    os.environ["CASCADE_JOURNAL"] = str(workdir / "journal")  # the fail_open journal files stay in here
    server = Server(workdir / "redis")
    (workdir / "redis").mkdir()
    server.start()
    try:
        print(
            f"Contention: each process {requests} requests of reserve $0.01 + settle $0.002-0.01, one day cap"
        )
        print(
            "| ledger | processes | requests/s | p50 ms | p99 ms | spent / cap | overspend | under-use |"
            " held after | outcome | ledger = what was charged |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for kind in ("sqlite", "redis"):
            for procs in (1, 2, 4, 8):
                where = str(workdir / f"c{procs}.sqlite3") if kind == "sqlite" else server.url
                show(contention(kind, where, procs, requests))
        for mode in ("fail_closed", "fail_open"):
            r = contention("redis", server.url, 8, requests, restart=server, on_ledger_error=mode)
            show(r, f"redis, restarted midway, {mode}")
        caps_used("redis", server.url)
        caps_used("sqlite", "")
        stall(workdir / "stall.sqlite3")
        faults(workdir)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
