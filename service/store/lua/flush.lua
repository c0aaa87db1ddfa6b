-- flush: an operator closes a chat's open batch now (reason "manual").
-- The timer is re-armed to expire in 1 ms and the chat made due now: the
-- nudger's touch publishes the expired event and the usual claim takes the
-- batch (the sweeper if the event is lost). Safe against concurrent appends
-- (a later append re-arms the timer: the batch stays open, flagged manual,
-- and closes at its next deadline) and claims (one of them wins, as always).
-- KEYS[1] = buf     P:{bN}:buf:<chat>
-- KEYS[2] = timer   P:{bN}:timer:<chat>
-- KEYS[3] = meta    P:{bN}:meta:<chat>
-- KEYS[4] = due     P:{bN}:due
-- KEYS[5] = wake    P:{bN}:wake (see wake.lua)
-- ARGV[1] = chat id
-- Returns {0} no open batch, or {1, messages in it}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = redis.call('LLEN', KEYS[1])
if count == 0 then
  return {0}
end
redis.call('HSET', KEYS[3], 'manual', 1)
redis.call('HDEL', KEYS[3], 'held')
redis.call('SET', KEYS[2], '1', 'PX', 1)
redis.call('ZADD', KEYS[4], now, ARGV[1])
wake(KEYS[5], now)
return {1, count}
