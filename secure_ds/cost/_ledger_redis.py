"""The Redis ledger: budgets and rate limits shared by the processes of many hosts.

:class:`RedisLedger` implements :class:`~._ledger.Ledger` with the same semantics as
:class:`~._ledger.SQLiteLedger`; the numbered invariants in :mod:`._ledger` hold here
too, kept as follows:

1. **No overspend by reservation.** ``admit`` (and ``reserve``, the same script
   without rate limits) is one Lua script (run with EVALSHA, loaded on demand): Redis
   runs a script alone, so its read-check-write over every budget of the call is
   atomic across all hosts, and it writes holds for all of them or for none.
   ``reserved`` sums only holds whose expiry is after ``now``.
2. **Actual spend is recorded truthfully.** ``settle`` adds the real cost to every key
   of the reservation, whatever the limit.
3. **Settle and release happen at most once.** Both are one script (``finish``)
   that removes the reservation's holds and charges (settle) only if it removed one;
   a repeat finds none and changes nothing.
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
7. **Rate limits count fixed UTC minute windows**, one hash per rate key holding the
   current window's number and counts (a hit in a new window starts it from zero;
   a token correction for a window already over changes nothing, since a finished
   window decides nothing). A hit checks every key of the call and counts in all of
   them or in none, in the same script as the budgets (invariant 9).
8. **Time is the server's.** Hosts' clocks disagree; a host whose clock ran ahead of
   another's by more than a reservation's TTL would see the other's holds as expired
   and spend past the limit, and hosts in different minutes would count different
   rate windows. So by default (``clock="server"``) every script reads Redis's own
   ``TIME`` and ignores the ``now`` it is given: every host's holds expire, and its
   calls fall in rate windows, by the one clock. :meth:`RedisLedger.now` is this
   host's estimate of the server's time (its own clock plus the offset the last
   script measured), which the meter uses for the day and month a call is charged to
   and for the pricing window, so those follow the server too (to within the round
   trip). ``clock="caller"`` uses the ``now`` given instead: for tests that move
   time, and for deployments that prefer their own NTP-disciplined clocks.

Each call costs two round trips: ``admit`` before it, ``finish`` after it.

Keys are ``secure-ds:{NAMESPACE}:...``: the namespace separates deployments sharing
one Redis, and the braces make it a Redis Cluster hash tag, so every key of a ledger
lives on one shard (a multi-key script needs that, and one ledger's budgets must be
checked together anyway). Nothing lives forever: budget keys expire ``retain_s`` (40
days) after their last write, which is after the end of any day or month period they
count, and a rate key expires three minutes after its last hit.

A connection, timeout or authentication failure raises :class:`LedgerUnavailable`
naming the server (never its password); the guard then refuses the call (fail closed).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from decimal import ROUND_CEILING, Context, Decimal
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

from .._ids import uuid7
from ..errors import ConfigError, SecureDSError
from ._ledger import (
    GRACE_S,
    WINDOW_S,
    Admission,
    Balance,
    BudgetLimit,
    Ledger,
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
_EXACT = Context(prec=100)  # wide enough that converting an amount never rounds it
_ONE = Decimal(1)
_ZERO = Decimal(0)
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

# now(given): the time a script works in, as a number and as exact text: the caller's
# when given, else the server's TIME (seconds, microseconds).
_LUA_CLOCK = """
local function clock(given)
  if given ~= '' then return tonumber(given), given end
  local t = redis.call('TIME')
  local text = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  return tonumber(text), text
end
"""

# KEYS: spent_1, holds_1, ..., spent_n, holds_n, then one rate hash per rate limit.
# ARGV: n, now ('' = the server's), amount, reservation id, ttl, retain_s, requests,
#       tokens, rate_retain_s, limit_1..limit_n, then rpm_j, tpm_j per rate ('' = none).
# Returns {status, now, expires_at, index, unit, used, spent_1, reserved_1, ...}:
# status 0 admitted, 1 refused by budget ``index``, 2 refused by rate ``index`` on
# ``unit`` (1 requests, 2 tokens) with ``used`` counted; balances as before this call.
_ADMIT = (
    _LUA_MONEY
    + _LUA_CLOCK
    + """
local n = tonumber(ARGV[1])
local now, now_text = clock(ARGV[2])
local amount = ARGV[3]
local expires = string.format('%.6f', now + tonumber(ARGV[5]))
local result = {0, now_text, expires, 0, 0, 0}
for i = 1, n do
  local holds = KEYS[2 * i]
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', now - """
    + repr(GRACE_S)
    + """)  -- past their grace: gone
  local spent = redis.call('GET', KEYS[2 * i - 1]) or '0'
  local held = reserved(holds, '(' .. now_text)
  result[5 + 2 * i] = spent
  result[6 + 2 * i] = held
  if result[1] == 0 and not le(add(add(spent, held), amount), ARGV[9 + i]) then
    result[1] = 1
    result[4] = i
  end
end
if result[1] ~= 0 then return result end
local m = #KEYS - 2 * n
local requests, tokens = tonumber(ARGV[7]), tonumber(ARGV[8])
local window = math.floor(now / """
    + str(WINDOW_S)
    + """)
local counts = {}
for j = 1, m do
  local c = redis.call('HMGET', KEYS[2 * n + j], 'window', 'requests', 'tokens')
  local used_requests, used_tokens = 0, 0
  if tonumber(c[1]) == window then
    used_requests, used_tokens = tonumber(c[2]) or 0, tonumber(c[3]) or 0
  end
  counts[j] = {used_requests, used_tokens}
  local rpm, tpm = ARGV[8 + n + 2 * j], ARGV[9 + n + 2 * j]
  if rpm ~= '' and used_requests + requests > tonumber(rpm) then
    result[1], result[4], result[5], result[6] = 2, j, 1, used_requests
    return result
  end
  if tpm ~= '' and used_tokens + tokens > tonumber(tpm) then
    result[1], result[4], result[5], result[6] = 2, j, 2, used_tokens
    return result
  end
end
for j = 1, m do
  redis.call('HSET', KEYS[2 * n + j], 'window', window,
    'requests', counts[j][1] + requests, 'tokens', counts[j][2] + tokens)
  redis.call('EXPIRE', KEYS[2 * n + j], ARGV[9])
end
local member = ARGV[4] .. ':' .. amount
for i = 1, n do
  redis.call('ZADD', KEYS[2 * i], expires, member)
  redis.call('EXPIRE', KEYS[2 * i], ARGV[6])
end
return result
"""
)

# KEYS: spent_1, holds_1, ..., spent_n, holds_n, then the call's rate hashes.
# ARGV: n, member ('' = no reservation), actual ('' = release), retain_s, window, delta.
# Returns 1 when the reservation was found (and charged), else 0.
_FINISH = (
    _LUA_MONEY
    + """
local n = tonumber(ARGV[1])
local found = 0
if ARGV[2] ~= '' then
  for i = 1, n do
    if redis.call('ZREM', KEYS[2 * i], ARGV[2]) == 1 then found = 1 end
  end
  if found == 1 and ARGV[3] ~= '' then
    for i = 1, n do
      local spent = redis.call('GET', KEYS[2 * i - 1]) or '0'
      redis.call('SET', KEYS[2 * i - 1], add(spent, ARGV[3]), 'EX', ARGV[4])
    end
  end
end
local delta = tonumber(ARGV[6])
if delta ~= 0 then
  for j = 2 * n + 1, #KEYS do
    -- only the window still counting: a finished one decides nothing any more
    if tonumber(redis.call('HGET', KEYS[j], 'window')) == tonumber(ARGV[5]) then
      local used = tonumber(redis.call('HGET', KEYS[j], 'tokens')) or 0
      redis.call('HSET', KEYS[j], 'tokens', math.max(used + delta, 0))
    end
  end
end
return found
"""
)

# KEYS: spent, holds. ARGV: now ('' = the server's). Returns {spent, reserved, now}.
_BALANCE = (
    _LUA_MONEY
    + _LUA_CLOCK
    + """
local now, now_text = clock(ARGV[1])
return {redis.call('GET', KEYS[1]) or '0', reserved(KEYS[2], '(' .. now_text), now_text}
"""
)


def to_units(amount: Decimal) -> str:
    """``amount`` USD as the decimal integer string the scripts store, rounded up to
    whole 10**-18 USD (invariant 6)."""
    if not amount.is_finite() or amount < 0:
        # the meter never passes these; refusing beats storing a number Lua cannot add
        raise ValueError(f"a ledger amount must be a finite USD amount >= 0, not {amount}")
    # a 100-digit context: no rounding before the one asked for, whatever the size
    scaled = amount.scaleb(_SCALE, context=_EXACT)
    return str(int(scaled.to_integral_value(rounding=ROUND_CEILING, context=_EXACT)))


def from_units(units: str) -> Decimal:
    """The Decimal for a stored amount, without the trailing zeros of the scale."""
    value = Decimal(units).scaleb(-_SCALE, context=_EXACT)
    if value == value.to_integral_value(context=_EXACT):
        return value.quantize(_ONE, context=_EXACT)  # normalize() would write 100 as 1E+2
    return value.normalize(context=_EXACT)


def safe_url(url: str) -> str:
    """``url`` without its user name and password, for messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unparseable Redis URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisLedger(Ledger):
    """A ledger in Redis (>= 6.2), shared by every process and host that uses the same
    server and ``namespace``.

    ``url`` is a ``redis://`` or ``rediss://`` (TLS) URL, which may carry a user name,
    password and database number (``redis://:PASSWORD@host:6379/0``); it is never
    printed. Operations wait at most ``timeout`` seconds for the server, then raise
    :class:`LedgerUnavailable`. The client is thread-safe and opens new connections in
    a forked child (redis-py's pool checks the pid).

    ``clock`` chooses whose time the scripts use (invariant 8): the server's (the
    default), or the ``now`` each caller passes. ``local_clock`` is this host's clock,
    from which :meth:`now` estimates the server's (replaceable to test clock skew).
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        timeout: float = 5.0,
        retain_s: int = RETAIN_S,
        clock: Literal["server", "caller"] = "server",
        local_clock: Callable[[], float] = time.time,
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
        if clock not in ("server", "caller"):
            raise ConfigError(
                "clock", f"{clock!r} is not a ledger clock", fix="Use server or caller."
            )
        self.clock = clock
        self._local_clock = local_clock
        self._offset: float | None = None  # server time minus local time, once measured
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
        self._admit = self._client.register_script(_ADMIT)
        self._finish = self._client.register_script(_FINISH)
        self._balance = self._client.register_script(_BALANCE)
        self._lock = threading.Lock()  # only for close()

    # ------------------------------------------------------------------ the Ledger protocol

    def now(self) -> float:
        """The server's time as this host best knows it: its own clock plus the offset
        measured by the last script (one TIME round trip the first time). With
        ``clock="caller"``, this host's clock."""
        if self.clock == "caller":
            return self._local_clock()
        if self._offset is None:
            seconds, micros = self._call("read the server's clock", self._client.time)
            self._learn(f"{seconds}.{micros:06d}")
        assert self._offset is not None
        return self._local_clock() + self._offset

    def admit(
        self,
        limits: Sequence[BudgetLimit],
        amount: Decimal,
        ttl: float,
        rates: Sequence[RateLimit],
        requests: int,
        tokens: int,
        now: float,
    ) -> Admission:
        units = to_units(amount)
        rid = uuid7()
        keys = self._budget_keys([limit.key for limit in limits])
        keys += [self._rate_key(rate.key) for rate in rates]
        args = [
            str(len(limits)),
            self._time_arg(now),
            units,
            rid,
            repr(float(ttl)),
            str(self.retain_s),
            str(requests),
            str(tokens),
            str(RATE_RETAIN_S),
            *(to_units(limit.limit) for limit in limits),
        ]
        for rate in rates:
            args += ["" if rate.rpm is None else str(rate.rpm)]
            args += ["" if rate.tpm is None else str(rate.tpm)]
        raw = cast(list[Any], self._run("admit a call", self._admit, keys, args))
        status, now_text = int(raw[0]), str(raw[1])
        self._learn(now_text)
        at = float(now_text)
        balances = tuple(
            Balance(from_units(str(raw[6 + 2 * i])), from_units(str(raw[7 + 2 * i])))
            for i in range(len(limits))
        )
        checked: ReserveResult | None = None
        if limits:
            checked = ReserveResult(None, balances, int(raw[3]) - 1 if status == 1 else None)
        if status == 1:
            return Admission(checked, None)
        window = int(at // WINDOW_S)
        if status == 2:
            unit: Literal["requests", "tokens"] = "requests" if int(raw[4]) == 1 else "tokens"
            refused = _refused(at, (int(raw[3]) - 1, unit, int(raw[5])))
            return Admission(checked, refused)
        if limits:
            keys_held = tuple(limit.key for limit in limits)
            held = Reservation(f"{rid}:{units}", keys_held, amount, float(raw[2]))
            checked = ReserveResult(held, balances)
        return Admission(checked, RateResult(window) if rates else None)

    def finish(
        self,
        reservation: Reservation | None,
        actual: Decimal | None,
        rate_keys: Sequence[str],
        window: int | None,
        token_delta: int,
    ) -> None:
        budget_keys = self._budget_keys(reservation.keys) if reservation is not None else []
        delta = token_delta if window is not None else 0
        keys = budget_keys + ([self._rate_key(key) for key in rate_keys] if delta else [])
        args = [
            str(len(budget_keys) // 2),
            reservation.id if reservation is not None else "",
            "" if actual is None else to_units(actual),
            str(self.retain_s),
            str(window if window is not None else -1),
            str(delta),
        ]
        self._run("settle a call", self._finish, keys, args)

    def balance(self, key: str, now: float) -> Balance:
        keys = self._budget_keys([key])
        raw = cast(
            list[Any], self._run("read a balance", self._balance, keys, [self._time_arg(now)])
        )
        self._learn(str(raw[2]))
        return Balance(from_units(str(raw[0])), from_units(str(raw[1])))

    def close(self) -> None:
        with self._lock:
            self._client.close()

    # ------------------------------------------------------------------ internals

    def _spent_key(self, key: str) -> str:
        return f"{self.prefix}spent:{key}"

    def _holds_key(self, key: str) -> str:
        return f"{self.prefix}holds:{key}"

    def _rate_key(self, key: str) -> str:
        return f"{self.prefix}rate:{key}"

    def _budget_keys(self, keys: Sequence[str]) -> list[str]:
        return [k for key in keys for k in (self._spent_key(key), self._holds_key(key))]

    def _time_arg(self, now: float) -> str:
        # '' asks the script for the server's TIME; repr keeps every digit of a float
        return "" if self.clock == "server" else repr(now)

    def _learn(self, server_now: str) -> None:
        """Note how far the server's clock is from ours (only its own clock, with the
        server's, is used: a late reply only makes the estimate a little behind)."""
        if self.clock == "server":
            self._offset = float(server_now) - self._local_clock()

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
