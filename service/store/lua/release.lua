-- release: end an operator's hold; the idle timer runs again from now
-- (never beyond the batch's max wait).
-- KEYS[1] = buf     P:{bN}:buf:<chat>
-- KEYS[2] = timer   P:{bN}:timer:<chat>
-- KEYS[3] = meta    P:{bN}:meta:<chat>
-- KEYS[4] = due     P:{bN}:due
-- KEYS[5] = wake    P:{bN}:wake (see wake.lua)
-- ARGV[1] = chat id
-- ARGV[2] = idle_ms
-- ARGV[3] = max_wait_ms
-- Returns {0} the chat is not held (or has no open batch), or {1, deadline_ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HDEL', KEYS[3], 'held') == 0 or redis.call('LLEN', KEYS[1]) == 0 then
  return {0}
end
local opened = tonumber(redis.call('HGET', KEYS[3], 'opened') or now)
local deadline = math.min(now + tonumber(ARGV[2]), opened + tonumber(ARGV[3]))
redis.call('SET', KEYS[2], '1', 'PX', math.max(deadline - now, 1))
redis.call('ZADD', KEYS[4], deadline, ARGV[1])
wake(KEYS[5], deadline)
return {1, deadline}
