"""Rate limits across instances on several hosts: the same rpm / tpm / max_parallel sliding windows as
one process (`windows.py`), kept in Redis and decided by one Lua script per admission, so that the
check and the count are atomic whichever instance asks. The script reads Redis's clock, not the
instance's, so hosts' clocks do not matter.

Per limited key: a sorted set of its calls' start times (rpm), one of the calls still counting
tokens with a hash of their tokens (tpm), and one of the calls in flight (max_parallel; a call whose
instance died is forgotten after `STALE` seconds). Everything expires on its own when a key goes
quiet. The script touches only the structures of the limits the key has (an rpm-only key: four
commands, and nothing to finish). A round trip per call of a limited key to admit it; a key with a
tpm or max_parallel limit has its calls that end in one turn of the event loop finished together, in
one more (none for keys without limits).

Redis is spoken to by the limiter's own client (`resp.py`: one connection, commands pipelined).
If Redis cannot be reached, calls are admitted (and the log says so once a minute): a limit protects
a provider's quota; the money is protected by the balance and the spend caps in the database.
"""

from __future__ import annotations

import asyncio
import logging
import time

from hubproxy.accounts.rules import Limits
from hubproxy.periods import WINDOW
from hubproxy.ratelimit import Limiter
from hubproxy.ratelimit.resp import RedisError, RespClient
from hubproxy.ratelimit.windows import check_call_size, refused

log = logging.getLogger("hubproxy.server")

STALE = 3600.0
COMPLAIN_EVERY = 60.0

ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local id, rpm, tpm, maxp = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens, window, stale = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local cutoff = now - window
if maxp > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - stale)
  if redis.call('ZCARD', KEYS[4]) >= maxp then
    return {'parallel', '1.0'}
  end
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  local n = redis.call('ZCARD', KEYS[1])
  if n >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], n - rpm, n - rpm, 'WITHSCORES')
    return {'rpm', tostring(tonumber(oldest[2]) + window - now)}
  end
end
if tpm > 0 then
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  if #old > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
    redis.call('HDEL', KEYS[3], unpack(old))
  end
  local sum = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[3])) do sum = sum + tonumber(v) end
  local excess = sum + tokens - tpm
  if excess > 0 then
    local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      excess = excess - tonumber(redis.call('HGET', KEYS[3], entries[i]) or '0')
      if excess <= 0 then
        return {'tpm', tostring(tonumber(entries[i + 1]) + window - now)}
      end
    end
    return {'tpm', tostring(window)}
  end
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('EXPIRE', KEYS[1], math.ceil(window) + 1)
end
if tpm > 0 then
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('HSET', KEYS[3], id, tokens)
  redis.call('EXPIRE', KEYS[2], math.ceil(window) + 1)
  redis.call('EXPIRE', KEYS[3], math.ceil(window) + 1)
end
if maxp > 0 then
  redis.call('ZADD', KEYS[4], now, id)
  redis.call('EXPIRE', KEYS[4], math.ceil(stale))
end
return false
"""

FINISH = """
for i = 1, #ARGV, 2 do
  redis.call('ZREM', KEYS[1], ARGV[i])
  if ARGV[i + 1] ~= '' and redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""


def keys_of(key_id: str) -> list[str]:
    """The key's four structures; the hash tag keeps them in one Redis Cluster slot."""
    tag = f"hubproxy:limits:{{{key_id}}}"
    return [f"{tag}:requests", f"{tag}:token_calls", f"{tag}:tokens", f"{tag}:running"]


class RedisLimiter(Limiter):
    def __init__(self, url: str) -> None:
        self.client = RespClient(url)
        self._admit = self.client.script(ADMIT)
        self._finish = self.client.script(FINISH)
        self._pending: set[asyncio.Task] = set()
        self._finishing: dict[str, list[str | int]] = {}  # key id → (call, tokens used) … to finish
        self._complained = 0.0
        self.calls = 0  # round trips made, for the benchmark's "Redis calls per call"

    async def admit(self, key_id: str, limits: Limits, tokens: int, request_id: str) -> str | None:
        check_call_size(limits, tokens)
        args: list[str | int | float] = [
            request_id,
            limits.rpm or 0,
            limits.tpm or 0,
            limits.max_parallel or 0,
            tokens,
            WINDOW,
            STALE,
        ]
        self.calls += 1
        try:
            refusal = await self.client.run(self._admit, keys_of(key_id), args)
        except (RedisError, OSError) as exc:
            self._complain(exc)
            return None
        if refusal:
            limit, wait = (part.decode() if isinstance(part, bytes) else part for part in refusal)
            raise refused(limits, limit, max(float(wait), 0.001))
        return request_id if limits.tpm or limits.max_parallel else None  # an rpm count has nothing to finish

    def finish(self, key_id: str, ticket: object, used_tokens: int | None) -> None:
        """Queued, not awaited: sent with the key's other calls that end in this turn of the loop."""
        if ticket is None:
            return
        ending = self._finishing.get(key_id)
        if ending is None:
            if not self._finishing:
                asyncio.get_running_loop().call_soon(self._send_finishes)
            ending = self._finishing[key_id] = []
        ending += (str(ticket), "" if used_tokens is None else used_tokens)

    def _send_finishes(self) -> None:
        """One script call per key (a key's structures share a Redis Cluster slot; two keys' may not)."""
        finishing, self._finishing = self._finishing, {}
        for key_id, args in finishing.items():
            keys = keys_of(key_id)
            self.calls += 1
            task = asyncio.ensure_future(self.client.run(self._finish, [keys[3], keys[2]], args))
            self._pending.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._pending.discard(task)
        failed = None if task.cancelled() else task.exception()
        if failed is not None:
            self._complain(failed)

    def _complain(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._complained >= COMPLAIN_EVERY:
            self._complained = now
            log.error("Redis unreachable, rate limits not applied across instances until it is back: %s", exc)

    async def close(self) -> None:
        if self._finishing:
            self._send_finishes()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.client.close()
