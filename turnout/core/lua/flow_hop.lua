-- A pipeline's step handed on, atomically with its acknowledgement, under the
-- step's lease. Celery's canvas sends a chain's next task after the task
-- returns and acks separately (a worker killed between the two loses the
-- successor or runs it twice), and counts a chord's parts in a counter that a
-- part dying at the wrong moment never increments (celery#2911). Here one
-- script does it all: the step's done marker (so a step is handed on once
-- however many times it runs), what it hands on, and the ack.
-- Modes:
--   next:  the next step's input stored at KEYS[9] (by reference, with a TTL),
--          its message pushed onto KEYS[10] and a bell token onto KEYS[11];
--   join:  this branch's output written into the join hash KEYS[9] under its
--          field; the branch whose write completes the set (HLEN == branches)
--          pushes the combine step's message, once;
--   final: the request's result stored at KEYS[9] and published, if it is
--          the first (KEYS[10] is the request's done key).
-- KEYS: leases, done (this step), owners, unacked_index, unacked, held, stats,
-- ledger, target, lane list or done key, bell, and optionally the drained hash
-- ARGV: incarnation, step task id, mode, ttl, payload, message, field,
-- branches, ledger entry (or ''), and with the drained hash: queue, rows,
-- run seconds, model, lane
-- Returns 1 handed on, 0 fenced (not this worker's any more), -1 this step
-- was handed on before (its delivery is acked all the same).
local lease = redis.call('HGET', KEYS[1], ARGV[2])
local outcome = 1
if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\t' then
  outcome = 0
  redis.call('HINCRBY', KEYS[7], 'fenced_hops', 1)
elseif not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[4]) then
  outcome = -1
  redis.call('HINCRBY', KEYS[7], 'duplicate_hops', 1)
end
if outcome == 1 then
  local mode = ARGV[3]
  if mode == 'next' then
    redis.call('SET', KEYS[9], ARGV[5], 'EX', ARGV[4])
    redis.call('LPUSH', KEYS[10], ARGV[6])
    redis.call('LPUSH', KEYS[11], 1)
  elseif mode == 'join' then
    local new = redis.call('HSET', KEYS[9], ARGV[7], ARGV[5])
    redis.call('EXPIRE', KEYS[9], ARGV[4])
    if new == 1 and redis.call('HLEN', KEYS[9]) == tonumber(ARGV[8]) then
      redis.call('LPUSH', KEYS[10], ARGV[6])
      redis.call('LPUSH', KEYS[11], 1)
    end
  elseif redis.call('SET', KEYS[10], ARGV[1], 'NX', 'EX', ARGV[4]) then
    redis.call('SET', KEYS[9], ARGV[5], 'EX', ARGV[4])
    redis.call('PUBLISH', KEYS[9], ARGV[5])
  else
    redis.call('HINCRBY', KEYS[7], 'duplicate_results', 1)
  end
  if KEYS[12] then
    redis.call('HINCRBY', KEYS[12], ARGV[10], 1)
    redis.call('HINCRBY', KEYS[12], 'model:' .. ARGV[13] .. ':rows', ARGV[11])
    redis.call('HINCRBYFLOAT', KEYS[12], 'model:' .. ARGV[13] .. ':busy_s', ARGV[12])
    if ARGV[14] then redis.call('HINCRBY', KEYS[12], 'lane:' .. ARGV[10] .. '@' .. ARGV[14], 1) end
  end
end
if outcome ~= 0 then
  -- The delivery is settled in this same step: Celery's own ack after the
  -- task returns finds nothing left to remove.
  local tag = string.sub(lease, #ARGV[1] + 2)
  redis.call('ZREM', KEYS[4], tag)
  redis.call('HDEL', KEYS[5], tag)
  redis.call('HDEL', KEYS[3], tag)
  redis.call('SREM', KEYS[6], tag)
  redis.call('HDEL', KEYS[1], ARGV[2])
end
if ARGV[9] ~= '' then
  redis.call('RPUSH', KEYS[8], string.sub(ARGV[9], 1, -2) .. ',"stored":' .. outcome .. '}')
end
return outcome
