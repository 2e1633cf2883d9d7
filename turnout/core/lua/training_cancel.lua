-- Cancelling and registering exclude each other. KEYS: the job's record, its
-- cancel flag. CANCEL (ARGV: ttl) answers 'FINISHED:<status>' when it is too
-- late (finished, cancelled, or its version being registered), else flags it
-- and answers REVOKED. MARK (no ARGV) answers 0 when cancelled, else notes that the
-- version is being registered (so a cancel now is too late) and answers 1.
local raw = redis.call('GET', KEYS[1])
if not raw then return 'UNKNOWN' end
local record = cjson.decode(raw)
if record['status'] == 'SUCCESS' or record['status'] == 'FAILURE'
   or record['status'] == 'REVOKED' then return 'FINISHED:' .. record['status'] end
if record['registering'] then return 'FINISHED:REGISTERING' end
record['status'] = 'REVOKED'
redis.call('SET', KEYS[1], cjson.encode(record), 'EX', ARGV[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
return 'REVOKED'
