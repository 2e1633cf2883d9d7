-- Marks a request revoked unless its task has already finished, atomically.
-- For a task that carries this request alone, the task's result is set to
-- REVOKED too, which wakes anyone waiting on it. KEYS: the task's result key,
-- the request's revoked marker. ARGV: meta doc, ttl, "1" if the task is solo.
local current = redis.call('GET', KEYS[1])
if current then
  local status = cjson.decode(current)['status']
  if status == 'SUCCESS' or status == 'FAILURE' then return status end
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  redis.call('PUBLISH', KEYS[1], ARGV[1])
end
return 'REVOKED'
