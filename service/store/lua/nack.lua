-- nack: delivery failed; schedule the next attempt or dead-letter the batch.
-- KEYS[1] = meta      P:{bN}:meta:<chat>
-- KEYS[2] = inflight  P:{bN}:inflight
-- KEYS[3] = proc      P:{bN}:proc:<batch_id>
-- KEYS[4] = buf       P:{bN}:buf:<chat>
-- KEYS[5] = timer     P:{bN}:timer:<chat>
-- KEYS[6] = due       P:{bN}:due
-- KEYS[7] = dead      P:{bN}:dead               (zset batch id -> dead-lettered ms)
-- KEYS[8] = deadbatch P:{bN}:dead:<batch_id>    (list, the messages)
-- KEYS[9] = deadinfo  P:{bN}:deadinfo:<batch_id> (hash)
-- ARGV[1] = chat id
-- ARGV[2] = batch id
-- ARGV[3] = lease token
-- ARGV[4] = error text
-- ARGV[5] = max_attempts
-- ARGV[6] = backoff_ms before the next attempt
-- ARGV[7] = lease_ms
-- Returns {0} lease lost (another worker owns the batch now),
--         {1, retry_at_ms} next attempt scheduled (lease extended past it),
--         {2, next} dead-lettered; next 1 = the chat's next batch is due now.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chat = ARGV[1]
if redis.call('HGET', KEYS[1], 'batch') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'token') ~= ARGV[3] then
  return {0}
end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or 1)
if attempt < tonumber(ARGV[5]) then
  local retry_at = now + tonumber(ARGV[6])
  redis.call('ZADD', KEYS[2], retry_at + tonumber(ARGV[7]), chat)
  redis.call('HSET', KEYS[1], 'error', ARGV[4])
  return {1, retry_at}
end

local m = redis.call('HMGET', KEYS[1], 'bseq', 'bopened', 'bclosed', 'breason')
redis.call('RENAME', KEYS[3], KEYS[8])
redis.call('PERSIST', KEYS[8])
redis.call('HSET', KEYS[9], 'chat', chat, 'seq', m[1], 'opened', m[2], 'closed', m[3],
  'reason', m[4], 'attempts', attempt, 'error', ARGV[4], 'dead', now)
redis.call('ZADD', KEYS[7], now, ARGV[2])
redis.call('ZREM', KEYS[2], chat)
redis.call('HDEL', KEYS[1], 'batch', 'token', 'attempt', 'bseq', 'bopened', 'bclosed',
  'bdeadline', 'breason', 'error')
local nxt = 0
if redis.call('EXISTS', KEYS[4]) == 1 and redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('ZADD', KEYS[6], now, chat)
  nxt = 1
end
return {2, nxt}
