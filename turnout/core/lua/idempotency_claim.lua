-- KEYS: the claim. ARGV: new id, ttl, now, the record key prefix, lapse
-- seconds. Returns the id the key already names, or nil once claimed.
local current = redis.call('GET', KEYS[1])
if current then
  local sep = string.find(current, '\t', 1, true)
  local id = string.sub(current, 1, sep - 1)
  local at = tonumber(string.sub(current, sep + 1))
  if redis.call('EXISTS', ARGV[4] .. id) == 1 or tonumber(ARGV[3]) - at < tonumber(ARGV[5]) then
    return id
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. '\t' .. ARGV[3], 'EX', ARGV[2])
return false
