-- drop: an operator removes a chat's open batch into the dead letters, so
-- that nothing is lost silently: it is listed by `batcher dead`, and can be
-- replayed or dropped for good from there. A batch in flight is untouched.
-- KEYS[1] = buf       P:{bN}:buf:<chat>
-- KEYS[2] = timer     P:{bN}:timer:<chat>
-- KEYS[3] = meta      P:{bN}:meta:<chat>
-- KEYS[4] = due       P:{bN}:due
-- KEYS[5] = dead      P:{bN}:dead
-- KEYS[6] = deadbatch P:{bN}:dead:<batch_id>
-- KEYS[7] = deadinfo  P:{bN}:deadinfo:<batch_id>
-- ARGV[1] = chat id
-- ARGV[2] = batch id (new, unique)
-- ARGV[3] = why (kept as the dead batch's error)
-- Returns {0} no open batch, or {1, messages dropped}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = redis.call('LLEN', KEYS[1])
if count == 0 then
  return {0}
end
local opened = redis.call('HGET', KEYS[3], 'opened') or now
redis.call('RENAME', KEYS[1], KEYS[6])
redis.call('PERSIST', KEYS[6])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[7], 'chat', ARGV[1], 'seq', 0, 'opened', opened, 'closed', now,
  'reason', 'manual', 'attempts', 0, 'error', ARGV[3], 'dead', now)
redis.call('ZADD', KEYS[5], now, ARGV[2])
redis.call('HDEL', KEYS[3], 'opened', 'last', 'bytes', 'held', 'manual', 'ch')
redis.call('ZREM', KEYS[4], ARGV[1])
return {1, count}
