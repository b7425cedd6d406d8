"""The shared store: Redis, through redis-py's blocking client in worker threads (its asyncio
client does not run under trio). TTLs are Redis's own (``PX``); compare-and-set, increment and
a sighting are Lua scripts (``EVALSHA``), so each is one atomic step on the server, and one
round trip, whatever the number of filterd hosts.
"""

from __future__ import annotations

from typing import Any, cast

import redis

from filterd.sdk.state.base import StateStore
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


class RedisStore(StateStore):
    def __init__(self, url: str, *, prefix: str, timeout: float, concurrency: int) -> None:
        super().__init__(f"redis:{_safe(url)}", timeout=timeout, concurrency=concurrency)
        self.prefix = prefix
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=concurrency,
            decode_responses=True,
        )
        self._cas = self._client.register_script(_COMPARE_AND_SET)
        self._incr = self._client.register_script(_INCREMENT)
        self._sighting = self._client.register_script(_SIGHTING)

    def ping(self) -> None:
        self._client.ping()

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _get(self, key: str) -> str | None:
        return cast(str | None, self._client.get(self._key(key)))

    def _get_many(self, keys: list[str]) -> list[str | None]:
        if not keys:
            return []
        return cast(list[str | None], self._client.mget([self._key(key) for key in keys]))

    def _set(self, key: str, value: str, ttl: float) -> None:
        self._client.set(self._key(key), value, px=_ms(ttl))

    def _delete(self, key: str) -> None:
        self._client.delete(self._key(key))

    def _compare_and_set(self, key: str, expected: str | None, value: str, ttl: float) -> bool:
        args: list[Any] = ["0" if expected is None else "1", expected or "", value, _ms(ttl)]
        return bool(self._cas(keys=[self._key(key)], args=args))

    def _increment(self, key: str, amount: int, ttl: float) -> int:
        return int(cast(int, self._incr(keys=[self._key(key)], args=[amount, _ms(ttl)])))

    def _record_sighting(
        self, key: str, now: int, maturing: Maturing, tally: Tally | None
    ) -> Sighting:
        keys = [self._key(key)]
        args: list[Any] = [
            now,
            maturing.wait,
            repr(float(maturing.restart_after)),
            _ms(maturing.keep),
            _ms(min(maturing.restart_after, maturing.keep)),
        ]
        if tally is not None:
            keys.append(self._key(tally.key))
            args += [tally.trusted_at, tally.every, _ms(tally.keep)]
        first, matured, trusted, counted = cast(list[int], self._sighting(keys=keys, args=args))
        return Sighting(
            int(first),
            matured_before=bool(matured),
            trusted=bool(trusted),
            counted=None if int(counted) < 0 else int(counted),
        )

    def _close(self) -> None:
        self._client.close()


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    _credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{host}" if sep else url
