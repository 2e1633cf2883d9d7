"""The Lua scripts that make each step of a delivery atomic in Redis."""

from __future__ import annotations

import redis

# The one way a worker takes a message: popped from its queue and recorded as
# unacked and owned in the same script, so that no moment exists in which the
# message is out of Redis and owned by no one (kombu's BRPOP, then a MULTI,
# had one: a worker killed between the two lost the message).
# KEYS: incarnations, unacked_index, unacked, owners, held, leases,
#       then n queues, then their n bells
# ARGV: incarnation, now, n, index of the bell already taken (0: none)
# Returns -1: the incarnation was reaped; 0: nothing; {queue, message}.
_CLAIM = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local n = tonumber(ARGV[3])
for i = 1, n do
  local queue = KEYS[6 + i]
  local msg = redis.call('RPOP', queue)
  if msg then
    if tonumber(ARGV[4]) ~= i then redis.call('RPOP', KEYS[6 + n + i]) end
    local ok, m = pcall(cjson.decode, msg)
    local tag, task = nil, ''
    if ok and type(m) == 'table' then
      if type(m.properties) == 'table' and type(m.properties.delivery_tag) == 'string' then
        tag = m.properties.delivery_tag
      end
      if type(m.headers) == 'table' and type(m.headers.id) == 'string' then task = m.headers.id end
    end
    if tag then
      redis.call('ZADD', KEYS[2], ARGV[2], tag)
      redis.call('HSET', KEYS[3], tag, '[' .. msg .. ',"",' .. cjson.encode(queue) .. ']')
      redis.call('HSET', KEYS[4], tag, ARGV[1] .. '\t' .. task)
      redis.call('SADD', KEYS[5], tag)
      if task ~= '' then redis.call('HSET', KEYS[6], task, ARGV[1] .. '\t' .. tag) end
    end
    return {queue, msg}
  end
end
return 0
"""

# KEYS: incarnations, unacked_index, unacked, owners, held, leases
# ARGV: incarnation, tag, unacked payload, score, task id
_APPEND = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1] .. '\\t' .. ARGV[5])
redis.call('SADD', KEYS[5], ARGV[2])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[6], ARGV[5], ARGV[1] .. '\\t' .. ARGV[2]) end
return 1
"""

# KEYS: owners, unacked_index, unacked, held, leases, stats
# ARGV: incarnation, tag
_ACK = """
local owner = redis.call('HGET', KEYS[1], ARGV[2])
if not owner then
  if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then
    redis.call('HINCRBY', KEYS[6], 'ack_refused', 1)
    return 0
  end
  return 2
end
local tab = string.find(owner, '\\t', 1, true)
if string.sub(owner, 1, tab - 1) ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[6], 'ack_refused', 1)
  return 0
end
local task = string.sub(owner, tab + 1)
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[2])
if task ~= '' and redis.call('HGET', KEYS[5], task) == ARGV[1] .. '\\t' .. ARGV[2] then
  redis.call('HDEL', KEYS[5], task)
end
return 1
"""

# KEYS: incarnations
# ARGV: incarnation
_BEAT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
"""

# KEYS: leases, done, result key, stats, deliveries, then revoked keys
# ARGV: incarnation, task id, STARTED meta, ttl
# Returns {code, deliveries, revoked...}: code 1 run, 0 fenced, -1 already done.
_START = """
if ARGV[1] ~= '' then
  local lease = redis.call('HGET', KEYS[1], ARGV[2])
  if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\\t' then
    redis.call('HINCRBY', KEYS[4], 'fenced_starts', 1)
    return {0, 0}
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[4], 'skipped_done', 1)
  return {-1, 0}
end
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4])
redis.call('PUBLISH', KEYS[3], ARGV[3])
local n = redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], ARGV[4])
local out = {1, n}
for i = 6, #KEYS do out[#out + 1] = redis.call('EXISTS', KEYS[i]) end
return out
"""

# KEYS: leases, done, result key, stats, ledger
# ARGV: incarnation ('' = no lease check), task id, meta, ttl, ledger entry (or '')
# Returns 1 stored, 0 fenced (the writer no longer owns the task), -1 duplicate.
_STORE = """
local outcome = 1
if ARGV[1] ~= '' then
  local lease = redis.call('HGET', KEYS[1], ARGV[2])
  if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\\t' then
    outcome = 0
  end
end
if outcome == 1 and not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[4]) then
  outcome = -1
end
if outcome == 1 then
  redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4])
  redis.call('PUBLISH', KEYS[3], ARGV[3])
elseif outcome == 0 then
  redis.call('HINCRBY', KEYS[4], 'fenced_results', 1)
else
  redis.call('HINCRBY', KEYS[4], 'duplicate_results', 1)
end
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[5], string.sub(ARGV[5], 1, -2) .. ',"stored":' .. outcome .. '}')
end
return outcome
"""


class Scripts:
    """The Lua scripts, registered on one client (EVALSHA after the first call)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.claim = client.register_script(_CLAIM)
        self.append = client.register_script(_APPEND)
        self.ack = client.register_script(_ACK)
        self.beat = client.register_script(_BEAT)
        self.start = client.register_script(_START)
        self.store = client.register_script(_STORE)
