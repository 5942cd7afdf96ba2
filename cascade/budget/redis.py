"""A Redis ledger: one cap for a whole fleet of processes and hosts.

Reserve, settle and release are each one Lua script, so every step is atomic on the server:
reserve drops holds whose TTL passed, checks spent + live holds + amount against every bucket of
the request and records the hold; settle replaces the hold by the real cost. Amounts are integer
nano-dollars (``INCRBY``, never floats). Hold expiry and window buckets follow the server's clock
(``TIME``; :meth:`RedisLedger.now` is the Budget's clock), so hosts with skewed clocks agree. Both
scripts are idempotent: a reserve or settle retried after a network blip counts once (a settled
hold's id is remembered for ``keep`` seconds, a day by default).

A hold that expires unsettled (a worker killed mid-call, whose provider still bills) is charged its
amount (``on_expired_hold="charge"``, the default) when a reservation drops it; a late settle
replaces that charge by the real cost. ``"release"`` returns its room instead, charging nothing.

Keys (all of one ledger share the hash tag ``{prefix}``, so a script's keys sit in one Redis
Cluster slot)::

    {prefix}:s:<bucket>   spent (nano-dollars); expires ``retention`` after the bucket's window ends
    {prefix}:h:<bucket>   held by live holds
    {prefix}:z:<bucket>   live holds by expiry (ms, server time)
    {prefix}:a:<bucket>   live hold -> amount
    {prefix}:c:<bucket>   expired hold -> amount charged for it (until its late settle)
    {prefix}:x:<hold>     hold state (held / settled), for idempotence

Errors: a server that cannot take the step now (connection refused or dropped, timeout, loading,
``READONLY`` after a failover, ``OOM`` under ``maxmemory``) raises
:class:`~cascade.errors.LedgerUnavailableError`; a wrong or missing password or missing rights raise a
plain :class:`~cascade.errors.LedgerError` (a mistake, not an outage: it fails closed in every
``on_ledger_error`` mode), as does any other Redis error.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import weakref
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

import cascade.budget
from cascade.budget.buckets import (
    MAX_NANO,
    NANO,
    hold_buckets,
    new_hold_id,
    refusal,
    reserve_nano,
    to_nano,
    window_end,
)
from cascade.errors import LedgerError, LedgerUnavailableError

try:
    import redis
    import redis.asyncio
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - redis is an optional dependency
    redis = None  # type: ignore[assignment]

OnExpiredHold = Literal["charge", "release"]

_CLOCK_FRESH = 60.0  # seconds a measured server clock offset is trusted without a reply refreshing it

RESERVE = """
local n = (#KEYS - 1) / 5
local state = KEYS[#KEYS]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local clock = string.format('%d', now)
if redis.call('EXISTS', state) == 1 then return {0, '0', '0', clock} end
local amount = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local charge = ARGV[5] == 'charge'
for i = 1, n do
  local s, h, z, a, c = KEYS[5*i-4], KEYS[5*i-3], KEYS[5*i-2], KEYS[5*i-1], KEYS[5*i]
  while true do
    local gone = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. clock, 'LIMIT', 0, 500)
    if #gone == 0 then break end
    local amounts = redis.call('HMGET', a, unpack(gone))
    local sum = 0
    for j, v in ipairs(amounts) do
      if v then
        sum = sum + tonumber(v)
        if charge then redis.call('HSET', c, gone[j], v) end
      end
    end
    redis.call('ZREM', z, unpack(gone))
    redis.call('HDEL', a, unpack(gone))
    if sum > 0 then
      if redis.call('DECRBY', h, string.format('%d', sum)) < 0 then redis.call('SET', h, '0', 'KEEPTTL') end
      if charge then
        redis.call('INCRBY', s, string.format('%d', sum))
        local ends = ARGV[5 + n + i]
        if ends ~= '0' and redis.call('PTTL', s) == -1 then redis.call('PEXPIREAT', s, ends) end
        redis.call('PEXPIRE', c, ttl + tonumber(ARGV[4]))
      end
    end
  end
  local used = tonumber(redis.call('GET', s) or '0') + tonumber(redis.call('GET', h) or '0')
  if used + amount > tonumber(ARGV[5 + i]) then
    return {i, string.format('%d', used), redis.call('GET', s) or '0', clock}
  end
end
local expires = string.format('%d', now + ttl)
local keep = ttl + 1000
for i = 1, n do
  local h, z, a = KEYS[5*i-3], KEYS[5*i-2], KEYS[5*i-1]
  redis.call('INCRBY', h, ARGV[2])
  redis.call('ZADD', z, expires, ARGV[1])
  redis.call('HSET', a, ARGV[1], ARGV[2])
  for _, k in ipairs({h, z, a}) do
    if redis.call('PTTL', k) < keep then redis.call('PEXPIRE', k, keep) end
  end
end
redis.call('SET', state, 'h', 'PX', ttl + tonumber(ARGV[4]))
return {0, '0', '0', clock}
"""

SETTLE = """
local n = (#KEYS - 1) / 5
local state = KEYS[#KEYS]
if redis.call('GET', state) == 's' then return 0 end
for i = 1, n do
  local s, h, z, a, c = KEYS[5*i-4], KEYS[5*i-3], KEYS[5*i-2], KEYS[5*i-1], KEYS[5*i]
  if redis.call('ZSCORE', z, ARGV[1]) then
    local v = redis.call('HGET', a, ARGV[1])
    redis.call('ZREM', z, ARGV[1])
    redis.call('HDEL', a, ARGV[1])
    if v and redis.call('DECRBY', h, v) < 0 then redis.call('SET', h, '0', 'KEEPTTL') end
  else
    local charged = redis.call('HGET', c, ARGV[1])
    if charged then
      redis.call('HDEL', c, ARGV[1])
      if redis.call('DECRBY', s, charged) < 0 then redis.call('SET', s, '0', 'KEEPTTL') end
    end
  end
  if ARGV[2] ~= '0' then redis.call('INCRBY', s, ARGV[2]) end
  if ARGV[3 + i] ~= '0' and redis.call('PTTL', s) == -1 then redis.call('PEXPIREAT', s, ARGV[3 + i]) end
end
redis.call('SET', state, 's', 'PX', ARGV[3])
return 1
"""

READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function total(first_ms, last_ms)
  local ids = redis.call('ZRANGEBYSCORE', KEYS[3], first_ms, last_ms)
  local sum = 0
  for first = 1, #ids, 500 do
    local last = math.min(first + 499, #ids)
    for _, v in ipairs(redis.call('HMGET', KEYS[4], unpack(ids, first, last))) do
      if v then sum = sum + tonumber(v) end
    end
  end
  return sum
end
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] == 'charge' then spent = spent + total('-inf', '(' .. string.format('%d', now)) end
return {string.format('%d', spent), string.format('%d', total(string.format('%d', now), '+inf'))}
"""


if redis is not None:
    # a wrong or missing password, or an ACL without the rights: a mistake to fix, not an outage
    _MISTAKES: tuple[type[Exception], ...] = (
        redis.AuthenticationError,
        redis.exceptions.AuthorizationError,
        redis.exceptions.NoPermissionError,
        redis.exceptions.AuthenticationWrongNumberOfArgsError,
    )
    # a server that refuses writes for now: a replica after a failover, maxmemory reached
    _REFUSED_WRITES: tuple[type[Exception], ...] = (
        redis.ReadOnlyError,
        redis.exceptions.OutOfMemoryError,
        redis.exceptions.BusyLoadingError,
    )


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


async def _closer(client: Any) -> AsyncGenerator[None, None]:
    """Kept suspended per event loop: asyncio closes it at loop shutdown, which closes the client."""
    try:
        yield
    finally:
        await client.aclose()


class RedisLedger:
    """Spend and holds in Redis, shared by every process and host pointing at it."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        url: str | None = Field(None, description="redis:// or rediss:// URL; default $CASCADE_REDIS_URL.")
        prefix: str = Field("cascade", min_length=1, description="Key prefix and Redis Cluster hash tag.")
        timeout: float = Field(1.0, gt=0, description="Seconds to connect or wait for a reply.")
        on_expired_hold: OnExpiredHold = Field(
            "charge",
            description="A hold that expires unsettled (a worker killed mid-call): charge its amount"
            " (a late settle replaces it by the real cost), or release its room.",
        )

        @field_validator("prefix")
        @classmethod
        def _no_braces(cls, v: str) -> str:
            if "{" in v or "}" in v:
                raise ValueError("prefix must not contain braces (it becomes the hash tag {prefix})")
            return v

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = "cascade",
        timeout: float = 1.0,
        on_expired_hold: OnExpiredHold = "charge",
        retention: float = 7 * 86400.0,
        keep: float = 86400.0,
        max_connections: int = 32,
        client: Any = None,
        async_client: Any = None,
    ) -> None:
        if redis is None:  # pragma: no cover
            raise LedgerError("the Redis ledger needs the redis package: pip install 'cascade-llm[redis]'")
        try:
            self.Options(
                url=url, prefix=prefix, timeout=timeout, on_expired_hold=on_expired_hold
            )  # one check for Python and YAML callers
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            problems = "; ".join(str(e["msg"]) for e in getattr(exc, "errors", list)()) or str(exc)
            raise LedgerError(f"redis ledger: {problems}", ledger="redis") from None
        url = url or os.environ.get("CASCADE_REDIS_URL")
        if client is None and not url:
            raise LedgerError(
                "the Redis ledger needs a url (ledger.url or $CASCADE_REDIS_URL)", ledger="redis"
            )
        self.url = url or "redis://(client)"
        self.name = _redact(self.url)
        self.prefix = prefix
        self.timeout = timeout
        self.on_expired_hold = on_expired_hold
        self.retention_ms = int(retention * 1000)
        self.keep_ms = int(keep * 1000)
        self.max_connections = max_connections
        if client is None:
            try:
                pool = redis.BlockingConnectionPool.from_url(
                    self.url,
                    max_connections=max_connections,
                    timeout=max(10.0, timeout),  # waiting for a free connection is local congestion
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), 2),
                    health_check_interval=30,
                )
                client = redis.Redis.from_pool(pool)
            except ValueError as exc:
                raise LedgerError(f"ledger url {self.name}: {exc}", ledger=self.name) from None
        self._client = client
        self._fixed_async = async_client
        self._reserve = client.register_script(RESERVE)
        self._settle = client.register_script(SETTLE)
        self._read_script = client.register_script(READ)
        self._clock = (0.0, -math.inf)  # (server - host seconds, monotonic time it was measured)
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any, Any, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"RedisLedger({self.name!r}, prefix={self.prefix!r})"

    @property
    def client(self) -> Any:
        """The synchronous Redis client (its pool), for others that keep state beside the ledger."""
        return self._client

    # -- keys and arguments ----------------------------------------------------------------------

    def _keys(self, buckets: Sequence[str], hold: str) -> list[str]:
        tag = "{" + self.prefix + "}"
        keys = []
        for b in buckets:
            keys += [f"{tag}:s:{b}", f"{tag}:h:{b}", f"{tag}:z:{b}", f"{tag}:a:{b}", f"{tag}:c:{b}"]
        keys.append(f"{tag}:x:{hold[:32]}")
        return keys

    def _reserve_args(
        self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, ttl: float
    ) -> tuple[str, list[Any]]:
        want = reserve_nano(amount)
        if want < 0:
            raise ValueError(f"cannot reserve a negative amount ({amount})")
        limits = [to_nano(limit) for _, limit in caps]
        if want >= MAX_NANO or any(c >= MAX_NANO for c in limits):
            raise ValueError("the Redis ledger holds amounts below $9,007,199 per bucket")
        hold = new_hold_id([b for b, _ in caps])
        ends = self._ends([b for b, _ in caps])
        args = [hold[:32], want, max(int(ttl * 1000), 1), self.keep_ms, self.on_expired_hold, *limits, *ends]
        return hold, args

    def _ends(self, buckets: Sequence[str]) -> list[int]:
        """When each bucket's spent key may go (ms): its window's end plus the retention; 0 never."""
        ends = []
        for b in buckets:
            end = window_end(b)
            ends.append(int(end.timestamp() * 1000) + self.retention_ms if end is not None else 0)
        return ends

    def _settle_args(self, hold: str, actual: Decimal) -> tuple[list[str], list[Any]]:
        buckets = hold_buckets(hold)
        if buckets is None:
            raise KeyError(f"unknown hold {hold!r}")
        return list(buckets), [hold[:32], max(to_nano(actual), 0), self.keep_ms, *self._ends(buckets)]

    def _refusal(self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, result: Any) -> None:
        index = int(result[0])
        if index == 0:
            return
        bucket, limit = caps[index - 1]
        raise refusal(bucket, limit, amount, Decimal(int(result[1])) / NANO, Decimal(int(result[2])) / NANO)

    def _fault(self, exc: Exception, hold: str | None = None) -> LedgerError:
        """The cascade error for a Redis error: a mistake (credentials, rights), an outage, or other."""
        reason = " ".join(str(exc).split())
        if isinstance(exc, _MISTAKES):
            return LedgerError(
                f"redis ledger {self.name} refused the credentials ({type(exc).__name__}: {reason}):"
                " fix the user / password of the ledger url; no call is made until then",
                ledger=self.name,
            )
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            what = "is unreachable"
            todo = "start the server"
        elif isinstance(exc, _REFUSED_WRITES) or reason.startswith(("MISCONF", "MASTERDOWN", "TRYAGAIN")):
            what = "cannot write now"
            todo = "point the url at the primary (READONLY: a failover) or free memory (OOM)"
        else:
            return LedgerError(f"redis ledger {self.name}: {type(exc).__name__}: {reason}", ledger=self.name)
        err = LedgerUnavailableError(
            f"redis ledger {self.name} {what} ({type(exc).__name__}: {reason}): {todo}, or set"
            " budget.on_ledger_error:"
            " fail_open to let calls go on",
            ledger=self.name,
        )
        # a reserve whose reply was lost may have landed: releasing this id later is harmless
        err.pending_hold = hold  # type: ignore[attr-defined]
        return err

    # -- the server's clock ------------------------------------------------------------------------

    def now(self) -> datetime:
        """The server's time (UTC): a :class:`~cascade.budget.Budget` names window buckets with it.

        The host clock plus an offset learned from every reservation's reply; when no reply came
        for a minute, one ``TIME`` round trip (blocking: the first request of an async process pays
        it once). An unreachable server leaves the last offset (the host clock at first).
        """
        offset, at = self._clock
        if time.monotonic() - at > _CLOCK_FRESH:
            before = cascade.budget.host_now().timestamp()
            try:
                sec, usec = self._client.time()
            except redis.RedisError:
                self._clock = (offset, time.monotonic() - _CLOCK_FRESH + 5.0)  # try again in 5 s
            else:
                self._learn_clock(int(sec) * 1000 + int(usec) // 1000, before)
            offset = self._clock[0]
        return datetime.fromtimestamp(cascade.budget.host_now().timestamp() + offset, UTC)

    def _learn_clock(self, server_ms: Any, before: float) -> None:
        """Keep the server - host offset a reply (sent at host time ``before``) shows."""
        after = cascade.budget.host_now().timestamp()
        self._clock = (int(server_ms) / 1000 - (before + after) / 2, time.monotonic())

    # -- sync ------------------------------------------------------------------------------------

    def reserve(self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0) -> str:
        hold, args = self._reserve_args(caps, amount, ttl)
        before = cascade.budget.host_now().timestamp()
        try:
            result = self._reserve(keys=self._keys([b for b, _ in caps], hold), args=args)
        except redis.RedisError as exc:
            raise self._fault(exc, hold) from None
        self._learn_clock(result[-1], before)
        self._refusal(caps, amount, result)
        return hold

    def settle(self, hold_id: str, actual: Decimal) -> None:
        """Charge ``actual`` once to the hold's buckets (retries and late settles included)."""
        buckets, args = self._settle_args(hold_id, actual)
        try:
            self._settle(keys=self._keys(buckets, hold_id), args=args)
        except redis.RedisError as exc:
            raise self._fault(exc) from None

    def release(self, hold_id: str) -> None:
        """Drop a hold, charging nothing."""
        self.settle(hold_id, Decimal(0))

    def _read(self, bucket: str) -> tuple[int, int]:
        try:
            spent, held = self._read_script(
                keys=self._keys([bucket], "0" * 32)[:5], args=[self.on_expired_hold]
            )
        except redis.RedisError as exc:
            raise self._fault(exc) from None
        return int(spent), int(held)

    def spent(self, bucket_key: str) -> Decimal:
        return Decimal(self._read(bucket_key)[0]) / NANO

    def held(self, bucket_key: str) -> Decimal:
        """What live holds keep from ``bucket_key`` now (expired ones excluded)."""
        return Decimal(self._read(bucket_key)[1]) / NANO

    def ping(self) -> None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise self._fault(exc) from None

    def close(self) -> None:
        self._client.close()

    # -- async (redis.asyncio, one pooled client per event loop) ----------------------------------

    def _ascripts_now(self) -> tuple[Any, Any, Any] | None:
        """This event loop's scripts when its client exists (no coroutine to await per call)."""
        entry = self._aclients.get(asyncio.get_running_loop())
        return None if entry is None else (entry[0], entry[1], entry[2])

    async def _ascripts(self) -> tuple[Any, Any, Any]:
        loop = asyncio.get_running_loop()
        entry = self._aclients.get(loop)
        if entry is None:
            client = self._fixed_async
            closer = None
            if client is None:
                # bounded: a thousand coroutines share a few connections (a server allows ~10,000)
                pool = redis.asyncio.BlockingConnectionPool.from_url(
                    self.url,
                    max_connections=self.max_connections,
                    timeout=max(10.0, self.timeout),
                    socket_timeout=self.timeout,
                    socket_connect_timeout=self.timeout,
                    retry=redis.asyncio.retry.Retry(ExponentialBackoff(cap=0.05, base=0.005), 2),
                )
                client = redis.asyncio.Redis.from_pool(pool)
                closer = _closer(client)
                await closer.__anext__()
            entry = (
                client.register_script(RESERVE),
                client.register_script(SETTLE),
                client.register_script(READ),
                closer,
            )
            self._aclients[loop] = entry
        return entry[0], entry[1], entry[2]

    async def areserve(
        self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0
    ) -> str:
        hold, args = self._reserve_args(caps, amount, ttl)
        script, _, _ = self._ascripts_now() or await self._ascripts()
        before = cascade.budget.host_now().timestamp()
        try:
            result = await script(keys=self._keys([b for b, _ in caps], hold), args=args)
        except redis.RedisError as exc:
            raise self._fault(exc, hold) from None
        self._learn_clock(result[-1], before)
        self._refusal(caps, amount, result)
        return hold

    async def asettle(self, hold_id: str, actual: Decimal) -> None:
        buckets, args = self._settle_args(hold_id, actual)
        _, script, _ = self._ascripts_now() or await self._ascripts()
        try:
            await script(keys=self._keys(buckets, hold_id), args=args)
        except redis.RedisError as exc:
            raise self._fault(exc) from None

    async def aclose(self) -> None:
        """Close this event loop's connections now (they are closed at loop shutdown anyway)."""
        entry = self._aclients.pop(asyncio.get_running_loop(), None)
        if entry is not None and entry[3] is not None:
            await entry[3].aclose()
