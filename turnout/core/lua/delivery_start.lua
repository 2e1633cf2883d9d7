-- KEYS: leases, done, result key, stats, deliveries, then revoked keys (one per request)
-- ARGV: incarnation, task id, STARTED meta, ttl, then one deadline per request
-- (Redis clock, epoch seconds; 0: none)
-- Returns {code, deliveries, revoked..., expired...}: code 1 run, 0 fenced,
-- -1 already done. A request is expired when Redis's own clock is past its
-- deadline, so that no worker's clock ever decides.
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
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expired = 0
for i = 5, #ARGV do
  local deadline = tonumber(ARGV[i])
  if deadline > 0 and now > deadline then
    out[#out + 1] = 1
    expired = expired + 1
  else
    out[#out + 1] = 0
  end
end
if expired > 0 then redis.call('HINCRBY', KEYS[4], 'expired_requests', expired) end
return out
