-- KEYS: leases, done, result key, stats, deliveries, then revoked keys
-- ARGV: incarnation, task id, STARTED meta, ttl
-- Returns {code, deliveries, revoked...}: code 1 run, 0 fenced, -1 already done.
if ARGV[1] ~= '' then
  local lease = redis.call('HGET', KEYS[1], ARGV[2])
  if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\t' then
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
