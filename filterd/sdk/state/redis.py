"""The shared store: Redis, on trio itself (``filterd.sdk.state.redis_connection``: a bounded
pool of connections, redis-py's serializer, hiredis's reader; no worker thread). TTLs are
Redis's own (``PX``); compare-and-set, increment and a sighting are Lua scripts (``EVALSHA``,
``EVAL`` when the server does not have the script yet, as after a restart), so each is one
atomic step on the server, and one round trip, whatever the number of filterd hosts.

Every call answers within the store's timeout or raises StoreFailure: the server down, slow,
or answering an error. The store needs no server to open: calls fail until it is up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import hiredis
import trio

from filterd.sdk.state.base import StateStore, StoreFailure, _checked
from filterd.sdk.state.redis_connection import ConnectionPool, RedisError, pack, parse_redis_url
from filterd.sdk.state.sighting import Maturing, Sighting, Tally

# KEYS[1]; ARGV: has-expected ("1"/"0"), expected, value, ttl in ms
_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
"""

# KEYS[1]; ARGV: amount, ttl in ms
_INCREMENT = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return total
"""

# filterd.sdk.state.sighting.next_sighting in Lua (the state-store tests hold the two to the
# same answers). KEYS[1] the record, KEYS[2] the tally (absent: no tally); ARGV: now, wait,
# restart_after, keep and min(restart_after, keep) in ms, then trusted_at, every, the tally's
# keep in ms. Returns {first, matured before (1/0), trusted (1/0), counted (-1: not)}.
_SIGHTING = """
local function pair(raw)
  if not raw then return nil end
  local a, rest = string.match(raw, '^([^,]*),(.*)$')
  if not a then return nil end
  local b = string.match(rest, '^([^,]*)')
  a = string.match(a, '^%s*([+-]?%d+)%s*$')
  b = string.match(b, '^%s*([+-]?%d+)%s*$')
  if not a or not b then return nil end
  return {tonumber(a), tonumber(b)}
end
local now, wait, restart_after = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local counts = nil
local every = 0
if #KEYS > 1 then
  every = tonumber(ARGV[7])
  counts = pair(redis.call('GET', KEYS[2]))
  if counts and counts[1] >= tonumber(ARGV[6]) then
    if now >= counts[2] + every or counts[2] > now then
      redis.call('SET', KEYS[2], string.format('%d,%d', counts[1] + 1, now), 'PX', ARGV[8])
    end
    return {now, 0, 1, -1}
  end
end
local seen = pair(redis.call('GET', KEYS[1]))
local first, matured = now, 0
if seen then
  first = seen[1]
  if seen[2] - first >= wait then
    matured = 1
  elseif now - first > restart_after then
    first = now
  end
  if first > now then first = now end
end
local ttl = ARGV[5]
if now - first >= wait then ttl = ARGV[4] end
redis.call('SET', KEYS[1], string.format('%d,%d', first, now), 'PX', ttl)
local counted = -1
if #KEYS > 1 and matured == 0 and now - first >= wait then
  if not counts or now >= counts[2] + every then
    counted = (counts and counts[1] or 0) + 1
    redis.call('SET', KEYS[2], string.format('%d,%d', counted, now), 'PX', ARGV[8])
  end
end
return {first, matured, 0, counted}
"""


def _ms(ttl: float) -> int:
    return max(1, round(ttl * 1000))


class _Script:
    """A Lua script and its SHA1 (``EVALSHA``'s name for it)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


_CAS_SCRIPT = _Script(_COMPARE_AND_SET)
_INCREMENT_SCRIPT = _Script(_INCREMENT)
_SIGHTING_SCRIPT = _Script(_SIGHTING)


class RedisStore(StateStore):
    """The store's calls are coroutines of their own here; the blocking backend methods the
    worker-thread stores implement are not used (they raise)."""

    def __init__(self, url: str, *, prefix: str, timeout: float, concurrency: int) -> None:
        super().__init__(f"redis:{_safe(url)}", timeout=timeout, concurrency=concurrency)
        self.prefix = prefix
        try:
            endpoint = parse_redis_url(url)
        except ValueError as exc:
            raise StoreFailure(self.description, str(exc)) from exc
        self._pool = ConnectionPool(endpoint, size=concurrency)

    # ------------------------------------------------------------------ the calls
    async def ping(self) -> None:
        await self._ask("ping", ("PING",))

    async def get(self, key: str) -> str | None:
        value: str | None = await self._ask("get", ("GET", self.prefix + key))
        return value

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        values: list[str | None] = await self._ask(
            "get", ("MGET", *[self.prefix + key for key in keys])
        )
        return values

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self._ask("set", ("SET", self.prefix + key, value, "PX", _ms(_checked(ttl))))

    async def delete(self, key: str) -> None:
        await self._ask("delete", ("DEL", self.prefix + key))

    async def compare_and_set(self, key: str, expected: str | None, value: str, ttl: float) -> bool:
        args = ("0" if expected is None else "1", expected or "", value, _ms(_checked(ttl)))
        done = await self._script("compare-and-set", _CAS_SCRIPT, (self.prefix + key,), args)
        return bool(done)

    async def increment(self, key: str, amount: int, ttl: float) -> int:
        args = (amount, _ms(_checked(ttl)))
        return int(await self._script("increment", _INCREMENT_SCRIPT, (self.prefix + key,), args))

    async def record_sighting(
        self, key: str, now: int, maturing: Maturing, tally: Tally | None = None
    ) -> Sighting:
        keys: tuple[str, ...] = (self.prefix + key,)
        args: tuple[str | int, ...] = (
            now,
            maturing.wait,
            repr(float(maturing.restart_after)),
            _ms(maturing.keep),
            _ms(min(maturing.restart_after, maturing.keep)),
        )
        if tally is not None:
            keys += (self.prefix + tally.key,)
            args += (tally.trusted_at, tally.every, _ms(tally.keep))
        first, matured, trusted, counted = await self._script(
            "sighting", _SIGHTING_SCRIPT, keys, args
        )
        return Sighting(
            int(first),
            matured_before=bool(matured),
            trusted=bool(trusted),
            counted=None if int(counted) < 0 else int(counted),
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    # ------------------------------------------------------------------ the wire
    async def _script(
        self, what: str, script: _Script, keys: Sequence[str], args: Sequence[str | int]
    ) -> Any:
        """``EVALSHA``, or ``EVAL`` (which loads the script) when the server answers that it
        does not know it: within the one timeout of the call."""
        return await self._ask(what, ("EVALSHA", script.sha, len(keys), *keys, *args), script)

    async def _ask(
        self, what: str, command: tuple[str | int, ...], script: _Script | None = None
    ) -> Any:
        """The server's reply to ``command``, within the timeout; StoreFailure otherwise."""
        with trio.move_on_after(self.timeout):
            try:
                (reply,) = await self._pool.request(pack(*command))
                if script is not None and _no_script(reply):
                    (reply,) = await self._pool.request(pack("EVAL", script.source, *command[2:]))
            except RedisError as exc:
                raise StoreFailure(self.description, f"{what}: {exc}") from exc
            if isinstance(reply, hiredis.ReplyError):
                raise StoreFailure(self.description, f"{what}: the server answered {reply}")
            return reply
        raise StoreFailure(self.description, f"{what}: no answer within {self.timeout:g}s")

    # ------------------------------------------- the worker-thread backend: not used here
    def _get(self, key: str) -> str | None:
        raise _not_blocking()

    def _set(self, key: str, value: str, ttl: float) -> None:
        raise _not_blocking()

    def _delete(self, key: str) -> None:
        raise _not_blocking()

    def _compare_and_set(self, key: str, expected: str | None, value: str, ttl: float) -> bool:
        raise _not_blocking()

    def _increment(self, key: str, amount: int, ttl: float) -> int:
        raise _not_blocking()

    def _record_sighting(
        self, key: str, now: int, maturing: Maturing, tally: Tally | None
    ) -> Sighting:
        raise _not_blocking()

    def _close(self) -> None:
        raise _not_blocking()


def _no_script(reply: object) -> bool:
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")


def _not_blocking() -> TypeError:
    return TypeError("the Redis store has no blocking calls: it runs on trio (await its methods)")


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    _credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{host}" if sep else url
