-- redeliver: take over a batch whose lease ran out (its worker crashed or
-- hung); the same batch id, the next attempt number, a new lease token.
-- KEYS[1] = meta      P:{bN}:meta:<chat>
-- KEYS[2] = inflight  P:{bN}:inflight
-- KEYS[3] = proc      P:{bN}:proc:<batch_id>
-- ARGV[1] = chat id
-- ARGV[2] = batch id (as read from meta by the caller)
-- ARGV[3] = new lease token
-- ARGV[4] = lease_ms
-- Returns {1, seq, opened_ms, closed_ms, deadline_ms, reason, attempt, {items}}
--   or {0} (not expired, or already taken over) or {5} (in-flight entry without a batch: dropped).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chat = ARGV[1]
local lease = redis.call('ZSCORE', KEYS[2], chat)
if not lease or tonumber(lease) > now then
  return {0}
end
local batch = redis.call('HGET', KEYS[1], 'batch')
if batch ~= ARGV[2] then
  if not batch then
    redis.call('ZREM', KEYS[2], chat)
    return {5}
  end
  return {0}
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('ZREM', KEYS[2], chat)
  redis.call('HDEL', KEYS[1], 'batch', 'token', 'attempt', 'bseq', 'bopened', 'bclosed',
    'bdeadline', 'breason', 'error')
  return {5}
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'token', ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), chat)
local m = redis.call('HMGET', KEYS[1], 'bseq', 'bopened', 'bclosed', 'bdeadline', 'breason')
return {1, tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), tonumber(m[4]), m[5], attempt,
  redis.call('LRANGE', KEYS[3], 0, -1)}
