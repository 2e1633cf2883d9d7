-- Registering a training job's version, against training_cancel.lua (they exclude
-- each other). KEYS: the job's record, its cancel flag. No ARGV. Answers 0 when
-- the job was cancelled, else notes that its version is being registered (a
-- cancel now is too late) and answers 1.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local record = cjson.decode(raw)
record['registering'] = true
redis.call('SET', KEYS[1], cjson.encode(record), 'KEEPTTL')
return 1
