-- The one way a worker takes a message: popped from its queue and recorded as
-- unacked and owned in the same script, so that no moment exists in which the
-- message is out of Redis and owned by no one (kombu's BRPOP, then a MULTI,
-- had one: a worker killed between the two lost the message).
-- Each queue has three lanes (high, normal, low: three lists); a claim takes
-- from the highest non-empty lane, FIFO within it, except every `share`-th
-- claim from a queue, which takes from the lowest non-empty one, so that the
-- lower lanes keep a share while they wait.
-- KEYS: incarnations, unacked_index, unacked, owners, held, leases,
-- then for each of the n queues its 3 lane lists (high, normal, low),
-- then the n bells, then the n claim counters
-- ARGV: incarnation, now, n, index of the bell already taken (0: none), share
-- Returns -1: the incarnation was reaped; 0: nothing; {lane list, message}.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local n = tonumber(ARGV[3])
local share = tonumber(ARGV[5])
for i = 1, n do
  local turns = KEYS[6 + 4 * n + i]
  local turn = tonumber(redis.call('GET', turns) or '0') + 1
  local order = {1, 2, 3}
  if share > 0 and turn % share == 0 then order = {3, 2, 1} end
  for _, lane in ipairs(order) do
    local queue = KEYS[6 + 3 * (i - 1) + lane]
    local msg = redis.call('RPOP', queue)
    if msg then
      redis.call('SET', turns, turn)
      if tonumber(ARGV[4]) ~= i then redis.call('RPOP', KEYS[6 + 3 * n + i]) end
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
end
return 0
