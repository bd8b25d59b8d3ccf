"""The Redis ledger: budgets and rate limits shared by the processes of many hosts.

:class:`RedisLedger` implements :class:`~._ledger.Ledger` with the same semantics as
:class:`~._ledger.SQLiteLedger`; the numbered invariants in :mod:`._ledger` hold here
too, kept as follows:

1. **No overspend by reservation.** ``reserve`` is one Lua script (run with EVALSHA,
   loaded on demand): Redis runs a script alone, so its read-check-write over every
   budget of the call is atomic across all hosts, and it writes holds for all of them
   or for none. ``reserved`` sums only holds whose expiry is after ``now``.
2. **Actual spend is recorded truthfully.** ``settle`` adds the real cost to every key
   of the reservation, whatever the limit.
3. **Settle and release happen at most once.** Both are one script that removes the
   reservation's holds and charges (settle) only if it removed one; a repeat finds
   none and changes nothing.
4. **Unsettled reservations expire.** A hold is a sorted-set member scored by its
   expiry: it stops counting at ``expires_at``, is kept :data:`GRACE_S` more for a late
   settle, and is deleted by the next ``reserve`` on that budget after that.
5. **A call is charged to the periods in force when it was reserved**: the period is
   in the key, chosen by the meter at reserve time, exactly as for the other ledgers.
6. **Money is exact.** Lua numbers are doubles (exact only to 2**53), so amounts are
   never Lua numbers: Redis stores them as decimal integer strings counting
   :data:`UNITS_PER_USD` (10**18) units of a dollar, and the scripts add and compare
   them digit by digit (see ``_LUA_MONEY``). Any sum is exact at any size. An amount
   with more than 18 decimal places (real prices have fewer than 12) is rounded *up*
   to the next unit, so a hold or a charge is never smaller than asked.
7. **Rate limits count fixed UTC minute windows**, one hash per key and window; ``hit``
   checks every key of the call and counts in all of them or in none, in one script.
8. **Time comes from the caller.** ``now`` is passed in and sent to the scripts as
   text (``repr`` of the float, so no digits are lost); Redis's own clock is used only
   for key expiry. Hosts sharing a ledger must keep their clocks synchronised (NTP): a
   host whose clock is ahead sees holds expire early by its skew.

Keys are ``secure-ds:{NAMESPACE}:...``: the namespace separates deployments sharing
one Redis, and the braces make it a Redis Cluster hash tag, so every key of a ledger
lives on one shard (a multi-key script needs that, and one ledger's budgets must be
checked together anyway). Nothing lives forever: budget keys expire ``retain_s`` (40
days) after their last write, which is after the end of any day or month period they
count, and rate windows expire three minutes after their last hit.

A connection, timeout or authentication failure raises :class:`LedgerUnavailable`
naming the server (never its password); the guard then refuses the call (fail closed).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

from .._ids import uuid7
from ..errors import ConfigError, SecureDSError
from ._ledger import (
    GRACE_S,
    WINDOW_S,
    Balance,
    BudgetLimit,
    RateLimit,
    RateResult,
    Reservation,
    ReserveResult,
    _refused,
)

if TYPE_CHECKING:
    import redis
    from redis.commands.core import Script

__all__ = ["DEFAULT_NAMESPACE", "UNITS_PER_USD", "LedgerUnavailable", "RedisLedger"]

UNITS_PER_USD = 10**18  # amounts are stored as whole numbers of 10**-18 USD
DEFAULT_NAMESPACE = "default"
RETAIN_S = 40 * 86_400  # > the longest budget period (a month) plus GRACE_S
RATE_RETAIN_S = 3 * WINDOW_S  # the window, the next one (adjust_tokens) and a margin
_URL_VAR = "SECURE_DS_METER_REDIS_URL"
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SCALE = 18
_T = TypeVar("_T")


class LedgerUnavailable(SecureDSError):
    """The Redis ledger could not be reached or refused an operation; the guard refuses
    metered calls until it answers again (failing open would lift every budget)."""


# Exact money in Lua: non-negative decimal integers as strings, without leading zeros.
# add() works on 7-digit limbs, whose sums (< 2 * 10**7) a double holds exactly.
_LUA_MONEY = """
local function add(a, b)
  local out, carry = {}, 0
  local i, j = #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local s = carry
    -- guard i, j > 0: string.sub counts a negative end from the string's end
    if i > 0 then s = s + tonumber(string.sub(a, math.max(i - 6, 1), i)) end
    if j > 0 then s = s + tonumber(string.sub(b, math.max(j - 6, 1), j)) end
    if s >= 10000000 then carry = 1; s = s - 10000000 else carry = 0 end
    table.insert(out, 1, string.format('%07d', s))
    i = i - 7
    j = j - 7
  end
  local r = (string.gsub(table.concat(out), '^0+', ''))
  if r == '' then r = '0' end
  return r
end
-- a <= b for normalised strings: shorter is smaller; equal lengths compare as text
local function le(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end
-- live holds are members 'id:amount' scored by expiry; sum those expiring after now
local function reserved(holds, after)
  local total = '0'
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', holds, after, '+inf')) do
    total = add(total, string.match(member, ':(%d+)$'))
  end
  return total
end
"""

# KEYS: spent_1, holds_1, spent_2, holds_2, ...
# ARGV: amount, member, expires_at, '(' .. now, prune_max, retain_s, limit_1, limit_2, ...
# Returns {blocked (1-based, 0: reserved), spent_1, reserved_1, spent_2, reserved_2, ...}
# with every budget's state before this call, as SQLiteLedger.reserve computes it.
_RESERVE = (
    _LUA_MONEY
    + """
local n = #KEYS / 2
local amount = ARGV[1]
local result = {0}
for i = 1, n do
  local holds = KEYS[2 * i]
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', ARGV[5])  -- past their grace: gone
  local spent = redis.call('GET', KEYS[2 * i - 1]) or '0'
  local held = reserved(holds, ARGV[4])
  result[2 * i] = spent
  result[2 * i + 1] = held
  if result[1] == 0 and not le(add(add(spent, held), amount), ARGV[6 + i]) then
    result[1] = i
  end
end
if result[1] ~= 0 then return result end
for i = 1, n do
  redis.call('ZADD', KEYS[2 * i], ARGV[3], ARGV[2])
  redis.call('EXPIRE', KEYS[2 * i], ARGV[6])
end
return result
"""
)

# KEYS as for reserve. ARGV: member, actual ('' to release), retain_s.
# Returns 1 when the reservation was found (and charged), 0 when it was already gone.
_DROP = (
    _LUA_MONEY
    + """
local n = #KEYS / 2
local found = false
for i = 1, n do
  if redis.call('ZREM', KEYS[2 * i], ARGV[1]) == 1 then found = true end
end
if not found then return 0 end
if ARGV[2] ~= '' then
  for i = 1, n do
    local spent = redis.call('GET', KEYS[2 * i - 1]) or '0'
    redis.call('SET', KEYS[2 * i - 1], add(spent, ARGV[2]), 'EX', ARGV[3])
  end
end
return 1
"""
)

# KEYS: one rate hash per limit for this window. ARGV: requests, tokens, expire_s, then
# rpm_i, tpm_i per limit ('' = not limited). Returns {} when counted, else
# {index (1-based), 1 requests | 2 tokens, used}: the check of ledger._rate_check.
_HIT = """
local requests, tokens = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, #KEYS do
  local counts = redis.call('HMGET', KEYS[i], 'requests', 'tokens')
  local used_requests = tonumber(counts[1]) or 0
  local used_tokens = tonumber(counts[2]) or 0
  local rpm, tpm = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  if rpm ~= '' and used_requests + requests > tonumber(rpm) then
    return {i, 1, used_requests}
  end
  if tpm ~= '' and used_tokens + tokens > tonumber(tpm) then
    return {i, 2, used_tokens}
  end
end
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'requests', requests)
  redis.call('HINCRBY', KEYS[i], 'tokens', tokens)
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
return {}
"""

# KEYS: rate hashes of one window. ARGV: delta. Only existing windows are corrected.
_ADJUST = """
local delta = tonumber(ARGV[1])
for i = 1, #KEYS do
  local used = redis.call('HGET', KEYS[i], 'tokens')
  if used then
    redis.call('HSET', KEYS[i], 'tokens', math.max(tonumber(used) + delta, 0))
  end
end
return 0
"""


def to_units(amount: Decimal) -> str:
    """``amount`` USD as the decimal integer string the scripts store, rounded up to
    whole 10**-18 USD (invariant 6)."""
    if not amount.is_finite() or amount < 0:
        # the meter never passes these; refusing beats storing a number Lua cannot add
        raise ValueError(f"a ledger amount must be a finite USD amount >= 0, not {amount}")
    with localcontext() as ctx:
        ctx.prec = 100  # no rounding before the one below, whatever the amount's size
        return str(int(amount.scaleb(_SCALE).to_integral_value(rounding=ROUND_CEILING)))


def from_units(units: str) -> Decimal:
    """The Decimal for a stored amount, without the trailing zeros of the scale."""
    with localcontext() as ctx:
        ctx.prec = 100
        value = Decimal(units).scaleb(-_SCALE)
        # normalize() alone would write 100 as 1E+2
        return (
            value.quantize(Decimal(1))
            if value == value.to_integral_value()
            else (value.normalize())
        )


def safe_url(url: str) -> str:
    """``url`` without its user name and password, for messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unparseable Redis URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisLedger:
    """A ledger in Redis (>= 6.2), shared by every process and host that uses the same
    server and ``namespace``.

    ``url`` is a ``redis://`` or ``rediss://`` (TLS) URL, which may carry a user name,
    password and database number (``redis://:PASSWORD@host:6379/0``); it is never
    printed. Operations wait at most ``timeout`` seconds for the server, then raise
    :class:`LedgerUnavailable`. The client is thread-safe and opens new connections in
    a forked child (redis-py's pool checks the pid).
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        timeout: float = 5.0,
        retain_s: int = RETAIN_S,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigError(
                "SECURE_DS_METER_BACKEND",
                "is redis, but the redis package (redis-py) is not installed",
                fix="Install it with: pip install 'secure-ds[redis]'",
            ) from None
        self.url = safe_url(url)
        if urlsplit(url).scheme not in ("redis", "rediss"):
            raise ConfigError(
                _URL_VAR,
                f"{self.url} is not a Redis URL",
                fix="Use redis://HOST:PORT/DB, or rediss://... for TLS.",
            )
        if not _NAMESPACE_RE.match(namespace):
            raise ConfigError(
                "namespace",
                f"{namespace!r} is not a ledger namespace",
                fix="Use 1 to 64 letters, digits, '.', '_' or '-'.",
            )
        self.namespace = namespace
        self.prefix = f"secure-ds:{{{namespace}}}:"
        self.retain_s = retain_s
        self._password = urlsplit(url).password or ""
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self._auth_errors: tuple[type[Exception], ...] = (
            redis.AuthenticationError,
            redis.exceptions.AuthorizationError,
        )
        self._unreachable: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
        try:
            # decode_responses: script results come back as str (amounts are text)
            self._client: redis.Redis = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise ConfigError(
                _URL_VAR,
                f"{self.url} is not a valid Redis URL ({self._scrub(str(exc))})",
                fix="Use redis://[[USER]:PASSWORD@]HOST[:PORT][/DB].",
            ) from None
        # register_script: calls run EVALSHA and load the script on NOSCRIPT (a new or
        # restarted server), so the script text crosses the network once per server
        self._reserve = self._client.register_script(_RESERVE)
        self._drop_script = self._client.register_script(_DROP)
        self._hit = self._client.register_script(_HIT)
        self._adjust = self._client.register_script(_ADJUST)
        self._lock = threading.Lock()  # only for close()

    # ------------------------------------------------------------------ the Ledger protocol

    def reserve(
        self, limits: Sequence[BudgetLimit], amount: Decimal, ttl: float, now: float
    ) -> ReserveResult:
        units = to_units(amount)
        reservation = Reservation(uuid7(), tuple(limit.key for limit in limits), amount, now + ttl)
        args = [
            units,
            self._member(reservation),
            repr(reservation.expires_at),
            f"({now!r}",  # exclusive: a hold expiring exactly now no longer counts
            repr(now - GRACE_S),
            str(self.retain_s),
            *(to_units(limit.limit) for limit in limits),
        ]
        raw = self._run("reserve", self._reserve, self._budget_keys(reservation.keys), args)
        result = cast(list[Any], raw)
        balances = tuple(
            Balance(from_units(str(result[2 * i + 1])), from_units(str(result[2 * i + 2])))
            for i in range(len(limits))
        )
        blocked = int(result[0])
        if blocked:
            return ReserveResult(None, balances, blocked - 1)
        return ReserveResult(reservation, balances)

    def settle(self, reservation: Reservation, actual: Decimal) -> None:
        units = to_units(actual)
        self._run(
            "settle",
            self._drop_script,
            self._budget_keys(reservation.keys),
            [self._member(reservation), units, str(self.retain_s)],
        )

    def release(self, reservation: Reservation) -> None:
        self._run(
            "release",
            self._drop_script,
            self._budget_keys(reservation.keys),
            [self._member(reservation), "", str(self.retain_s)],
        )

    def balance(self, key: str, now: float) -> Balance:
        def read() -> tuple[str | None, list[str]]:
            # MULTI/EXEC: both reads see the same state
            pipe = self._client.pipeline(transaction=True)
            pipe.get(self._spent_key(key))
            pipe.zrangebyscore(self._holds_key(key), f"({now!r}", "+inf")
            spent, members = pipe.execute()
            return cast(str | None, spent), cast(list[str], members)

        spent, members = self._call("read a balance", read)
        # summed as integers: a Decimal sum would round to the context's 28 digits
        reserved = sum(int(member.rsplit(":", 1)[1]) for member in members)
        return Balance(from_units(spent or "0"), from_units(str(reserved)))

    def hit(
        self, limits: Sequence[RateLimit], requests: int, tokens: int, now: float
    ) -> RateResult:
        window = int(now // WINDOW_S)
        args: list[str] = [str(requests), str(tokens), str(RATE_RETAIN_S)]
        for limit in limits:
            args += ["" if limit.rpm is None else str(limit.rpm)]
            args += ["" if limit.tpm is None else str(limit.tpm)]
        keys = [self._rate_key(limit.key, window) for limit in limits]
        result = cast(list[Any], self._run("count a rate limit", self._hit, keys, args))
        if not result:
            return RateResult(window)
        unit: Literal["requests", "tokens"] = "requests" if int(result[1]) == 1 else "tokens"
        return _refused(now, (int(result[0]) - 1, unit, int(result[2])))

    def adjust_tokens(self, keys: Sequence[str], window: int, delta: int) -> None:
        rate_keys = [self._rate_key(key, window) for key in keys]
        self._run("adjust a token count", self._adjust, rate_keys, [str(delta)])

    def close(self) -> None:
        with self._lock:
            self._client.close()

    # ------------------------------------------------------------------ internals

    def _spent_key(self, key: str) -> str:
        return f"{self.prefix}spent:{key}"

    def _holds_key(self, key: str) -> str:
        return f"{self.prefix}holds:{key}"

    def _rate_key(self, key: str, window: int) -> str:
        return f"{self.prefix}rate:{key}:{window}"

    def _budget_keys(self, keys: Sequence[str]) -> list[str]:
        return [k for key in keys for k in (self._spent_key(key), self._holds_key(key))]

    @staticmethod
    def _member(reservation: Reservation) -> str:
        # the amount rides in the member so the scripts can sum holds from one sorted
        # set; settle rebuilds the same member from the Reservation it is given
        return f"{reservation.id}:{to_units(reservation.amount)}"

    def _run(self, what: str, script: Script, keys: list[str], args: list[str]) -> object:
        return self._call(what, lambda: script(keys=keys, args=args))

    def _call(self, what: str, operation: Callable[[], _T]) -> _T:
        try:
            return operation()
        except self._errors as exc:
            raise self._unavailable(what, exc) from None

    def _unavailable(self, what: str, exc: Exception) -> LedgerUnavailable:
        if isinstance(exc, self._auth_errors):
            fix = f"Check the user name and password in {_URL_VAR}."
        elif isinstance(exc, self._unreachable):
            fix = (
                f"Check that Redis is running and reachable at {self.url} (for the tests: "
                "bash scripts/start-services.sh). Metered calls are refused until it answers."
            )
        else:
            fix = (
                f"Check that the server is Redis >= 6.2 and that no other program writes keys "
                f"under {self.prefix}* (else choose another namespace)."
            )
        detail = self._scrub(f"{type(exc).__name__}: {exc}")
        return LedgerUnavailable(
            f"The Redis ledger at {self.url} could not {what} ({detail}).", hint=fix
        )

    def _scrub(self, text: str) -> str:
        # redis-py's messages name host and port only, but never trust that with a secret
        return text.replace(self._password, "**********") if self._password else text
