-- KEYS: owners, unacked_index, unacked, held, leases, stats, and optionally the
-- incarnation's joined hash (a task taken in by worker-side batching)
-- ARGV: incarnation, tag
-- A joined tag is out of the child's hands whatever the answer.
if KEYS[7] then redis.call('HDEL', KEYS[7], ARGV[2]) end
local owner = redis.call('HGET', KEYS[1], ARGV[2])
if not owner then
  if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then
    redis.call('HINCRBY', KEYS[6], 'ack_refused', 1)
    return 0
  end
  return 2
end
local tab = string.find(owner, '\t', 1, true)
if string.sub(owner, 1, tab - 1) ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[6], 'ack_refused', 1)
  return 0
end
local task = string.sub(owner, tab + 1)
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[2])
if task ~= '' and redis.call('HGET', KEYS[5], task) == ARGV[1] .. '\t' .. ARGV[2] then
  redis.call('HDEL', KEYS[5], task)
end
return 1
