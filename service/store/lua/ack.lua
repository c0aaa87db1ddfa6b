-- ack: a batch was delivered; forget it and release the chat.
-- KEYS[1] = meta      P:{bN}:meta:<chat>
-- KEYS[2] = inflight  P:{bN}:inflight
-- KEYS[3] = proc      P:{bN}:proc:<batch_id>
-- KEYS[4] = buf       P:{bN}:buf:<chat>
-- KEYS[5] = timer     P:{bN}:timer:<chat>
-- KEYS[6] = due       P:{bN}:due
-- ARGV[1] = chat id
-- ARGV[2] = batch id
-- ARGV[3] = lease token of the attempt that delivered it
-- Returns {acked, next}: acked 0 = the batch is no longer this attempt's: acked
-- already, or redelivered under a new token (that attempt may still be at the
-- handler, so the chat stays taken until it ends: batches never overlap);
-- next 1 = the chat's next batch is due now.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chat = ARGV[1]
local acked = 0
if redis.call('HGET', KEYS[1], 'batch') == ARGV[2] and redis.call('HGET', KEYS[1], 'token') == ARGV[3] then
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[2], chat)
  redis.call('HDEL', KEYS[1], 'batch', 'token', 'attempt', 'bseq', 'bopened', 'bclosed',
    'bdeadline', 'breason', 'error')
  acked = 1
end
local nxt = 0
if redis.call('HEXISTS', KEYS[1], 'batch') == 0 and redis.call('EXISTS', KEYS[4]) == 1
    and redis.call('EXISTS', KEYS[5]) == 0 then
  -- The next batch went idle while this one was in flight.
  redis.call('ZADD', KEYS[6], now, chat)
  nxt = 1
end
return {acked, nxt}
