-- Worker-side batching: a worker running one predict task (the leader) takes
-- more queued tasks of the same model and version into the same forward pass,
-- whichever API process sent them. Each taken message is recorded as unacked
-- and owned in this script, exactly as a claim records it (so a worker killed
-- now loses nothing: the reaper gives them back), and also in the
-- incarnation's joined hash (tag -> the leader's tag), which tells the worker's
-- own audit that a pool child has it in hand while the leader runs.
-- Only messages the router wrote carry the join header, and a message that has
-- gone back to its queue once (redelivered, requeued) has lost it: a job that
-- may have killed its worker runs alone, never taking innocent ones with it.
-- The lanes are scanned best first, oldest first within each (FIFO holds).
-- KEYS: incarnations, unacked_index, unacked, owners, held, leases, joined,
-- bell, then the lane lists to take from, best first
-- ARGV: incarnation, now, the leader's task id, join key (model|version|pinned),
-- rows of room, how deep to look into each lane
-- Returns the messages taken: none when the incarnation was reaped or no
-- longer holds the leader.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {} end
local lease = redis.call('HGET', KEYS[6], ARGV[3])
if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. '\t' then return {} end
local leader = string.sub(lease, #ARGV[1] + 2)
local needle = '"turnout_join":"' .. ARGV[4] .. '|'
local room = tonumber(ARGV[5])
local depth = tonumber(ARGV[6])
local out = {}
for k = 9, #KEYS do
  if room <= 0 then break end
  local lane = KEYS[k]
  -- The oldest messages are at the right-hand end (LPUSH in, RPOP out).
  local tail = redis.call('LRANGE', lane, -depth, -1)
  for j = #tail, 1, -1 do
    local msg = tail[j]
    -- A plain find, not a decode: a batch chunk is hundreds of kB of JSON.
    local _, e = string.find(msg, needle, 1, true)
    local rows = e and tonumber(string.match(msg, '^(%d+)"', e + 1))
    if rows and rows <= room then
      local ok, m = pcall(cjson.decode, msg)
      if ok and type(m) == 'table' and type(m.properties) == 'table'
          and type(m.properties.delivery_tag) == 'string' and type(m.headers) == 'table'
          and type(m.headers.id) == 'string'
          and redis.call('LREM', lane, -1, msg) == 1 then
        local tag, task = m.properties.delivery_tag, m.headers.id
        redis.call('ZADD', KEYS[2], ARGV[2], tag)
        redis.call('HSET', KEYS[3], tag, '[' .. msg .. ',"",' .. cjson.encode(lane) .. ']')
        redis.call('HSET', KEYS[4], tag, ARGV[1] .. '\t' .. task)
        redis.call('SADD', KEYS[5], tag)
        redis.call('HSET', KEYS[6], task, ARGV[1] .. '\t' .. tag)
        redis.call('HSET', KEYS[7], tag, leader)
        -- One bell token per message: the taken one's token goes with it.
        redis.call('RPOP', KEYS[8])
        room = room - rows
        out[#out + 1] = msg
        if room <= 0 then break end
      end
    end
  end
end
return out
