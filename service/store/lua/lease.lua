-- lease: extend the lease of a batch this worker holds, optionally starting
-- its next delivery attempt (attempt + 1).
-- KEYS[1] = meta      P:{bN}:meta:<chat>
-- KEYS[2] = inflight  P:{bN}:inflight
-- ARGV[1] = chat id
-- ARGV[2] = batch id
-- ARGV[3] = lease token
-- ARGV[4] = lease_ms (0 releases the batch: redelivered by the next sweep)
-- ARGV[5] = "1" to start the next attempt, else "0"
-- Returns the attempt number now running, or 0 when the lease was lost.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[1], 'batch') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'token') ~= ARGV[3] then
  return 0
end
local attempt
if ARGV[5] == '1' then
  attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
else
  attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or 1)
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
return attempt
