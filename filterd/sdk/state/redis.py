"""The shared store: Redis, through redis-py's blocking client in worker threads (its asyncio
client does not run under trio). TTLs are Redis's own (``PX``); compare-and-set and increment
are Lua scripts, so each is one atomic step on the server whatever the number of filterd hosts.
"""

from __future__ import annotations

from typing import Any, cast

import redis

from filterd.sdk.state.base import StateStore

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

    def _close(self) -> None:
        self._client.close()


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    _credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{host}" if sep else url
