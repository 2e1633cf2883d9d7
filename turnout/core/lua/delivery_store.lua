-- KEYS: leases, done, result key, stats, ledger, and optionally the drained hash
-- ARGV: incarnation ('' = no lease check), task id, meta, ttl, ledger entry (or ''),
-- and with the drained hash: the queue, the task's rows, its run seconds, its model,
-- and optionally its lane (counted as lane:<queue>@<lane>)
-- Returns 1 stored, 0 fenced (the writer no longer owns the task), -1 duplicate.
local outcome = 1
if ARGV[1] ~= '' then
  local lease = redis.call('HGET', KEYS[1], ARGV[2])
  if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\t' then
    outcome = 0
  end
end
if outcome == 1 and not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[4]) then
  outcome = -1
end
if outcome == 1 then
  redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4])
  redis.call('PUBLISH', KEYS[3], ARGV[3])
  if KEYS[6] then
    -- What each queue has drained: tasks, rows and run time (the router's
    -- drain-rate and service-time estimates read these).
    redis.call('HINCRBY', KEYS[6], ARGV[6], 1)
    redis.call('HINCRBY', KEYS[6], 'model:' .. ARGV[9] .. ':rows', ARGV[7])
    redis.call('HINCRBYFLOAT', KEYS[6], 'model:' .. ARGV[9] .. ':busy_s', ARGV[8])
    if ARGV[10] then redis.call('HINCRBY', KEYS[6], 'lane:' .. ARGV[6] .. '@' .. ARGV[10], 1) end
  end
elseif outcome == 0 then
  redis.call('HINCRBY', KEYS[4], 'fenced_results', 1)
else
  redis.call('HINCRBY', KEYS[4], 'duplicate_results', 1)
end
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[5], string.sub(ARGV[5], 1, -2) .. ',"stored":' .. outcome .. '}')
end
return outcome
