-- A trial's progress only ever goes up: a redelivered trial that starts again
-- from its first epoch writes nothing until it passes where the first run got.
-- KEYS: progress hash; ARGV: trial index, progress JSON, percent, ttl.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local before = tonumber(cjson.decode(current)['percent']) or 0
  if before > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
