-- typing: the user is typing (or stopped) in a chat; an open batch waits.
-- Typing re-arms the idle timer of an open batch to now + typing_ms, never
-- beyond its max wait and never earlier than it already runs; a pause puts
-- a typing hold back to now + idle_ms. Typing alone never opens a batch, and
-- a batch that is full, held by an operator or flushed is left as it is.
-- KEYS[1] = buf     P:{bN}:buf:<chat>
-- KEYS[2] = timer   P:{bN}:timer:<chat>
-- KEYS[3] = meta    P:{bN}:meta:<chat>
-- KEYS[4] = due     P:{bN}:due
-- KEYS[5] = wake    P:{bN}:wake (see wake.lua)
-- ARGV[1] = chat id
-- ARGV[2] = "typing" or "paused"
-- ARGV[3] = typing_ms
-- ARGV[4] = idle_ms
-- ARGV[5] = max_wait_ms
-- ARGV[6] = max_messages
-- ARGV[7] = max_batch_bytes
-- Returns {status, deadline_ms, now_ms}. Status:
--   0 no open batch (nothing done),
--   1 the deadline moved later, 2 it moved earlier (a pause),
--   3 unchanged (already later, full, held, flushed, or closing now).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chat = ARGV[1]

local count = redis.call('LLEN', KEYS[1])
if count == 0 then
  return {0, 0, now}
end
local current = tonumber(redis.call('ZSCORE', KEYS[4], chat) or 0)
local state = redis.call('HMGET', KEYS[3], 'opened', 'bytes', 'held', 'manual')
if state[3] or state[4] or count >= tonumber(ARGV[6])
    or tonumber(state[2] or 0) >= tonumber(ARGV[7])
    or redis.call('PTTL', KEYS[2]) <= 0 then
  return {3, current, now}
end
local opened = tonumber(state[1] or now)
local cap = opened + tonumber(ARGV[5])
local deadline
if ARGV[2] == 'typing' then
  deadline = math.min(now + tonumber(ARGV[3]), cap)
  if deadline <= current then
    return {3, current, now}
  end
else
  deadline = math.min(now + tonumber(ARGV[4]), cap)
  if deadline >= current then
    return {3, current, now}
  end
end
redis.call('SET', KEYS[2], '1', 'PX', math.max(deadline - now, 1))
redis.call('ZADD', KEYS[4], deadline, chat)
wake(KEYS[5], deadline)
return {deadline > current and 1 or 2, deadline, now}
