-- KEYS: incarnations, unacked_index, unacked, owners, held, leases
-- ARGV: incarnation, tag, unacked payload, score, task id
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1] .. '\t' .. ARGV[5])
redis.call('SADD', KEYS[5], ARGV[2])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[6], ARGV[5], ARGV[1] .. '\t' .. ARGV[2]) end
return 1
