-- The one way a worker takes a message: popped from its queue and recorded as
-- unacked and owned in the same script, so that no moment exists in which the
-- message is out of Redis and owned by no one (kombu's BRPOP, then a MULTI,
-- had one: a worker killed between the two lost the message).
-- KEYS: incarnations, unacked_index, unacked, owners, held, leases,
-- then n queues, then their n bells
-- ARGV: incarnation, now, n, index of the bell already taken (0: none)
-- Returns -1: the incarnation was reaped; 0: nothing; {queue, message}.
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
