-- nudge: touch the timers of one bucket whose deadline has just passed, so
-- Redis deletes them now and publishes their "expired" events, instead of
-- whenever its background expire cycle happens to reach them (seconds later
-- at scale). Timer key names are built from the bucket's own prefix, so
-- every key touched shares the bucket's hash slot.
-- KEYS[1] = due           P:{bN}:due
-- ARGV[1] = timer prefix  P:{bN}:timer:
-- ARGV[2] = window_ms     only deadlines within this window (older ones are the sweeper's)
-- ARGV[3] = limit
-- Returns the number of timers touched.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chats = redis.call('ZRANGEBYSCORE', KEYS[1],
  '(' .. string.format('%d', now - tonumber(ARGV[2])), string.format('%d', now),
  'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #chats do
  redis.call('EXISTS', ARGV[1] .. chats[i])
end
return #chats
