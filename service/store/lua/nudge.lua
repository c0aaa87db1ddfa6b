-- nudge: touch the timers of one bucket whose deadline has just passed, so
-- Redis deletes them now and publishes their "expired" events, instead of
-- whenever its background expire cycle happens to reach them (seconds later
-- at scale); then say when the next deadline of the bucket falls, and keep
-- that moment in its wake key: a script that sets an earlier deadline
-- publishes it (wake.lua), so the nudger sleeps until one of the two.
-- Timer key names are built from the bucket's own prefix, so every key
-- touched shares the bucket's hash slot.
-- KEYS[1] = due           P:{bN}:due
-- KEYS[2] = wake          P:{bN}:wake
-- ARGV[1] = timer prefix  P:{bN}:timer:
-- ARGV[2] = window_ms     only deadlines within this window (older ones are the sweeper's)
-- ARGV[3] = limit
-- Returns {timers touched, next deadline ms or -1 (none), now ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[3])
local chats = redis.call('ZRANGEBYSCORE', KEYS[1],
  '(' .. string.format('%d', now - tonumber(ARGV[2])), string.format('%d', now),
  'LIMIT', 0, limit)
local nxt = nil
for i = 1, #chats do
  -- PTTL deletes an expired timer (publishing its event); a timer that is
  -- not expired yet (a deadline of this very millisecond) says when it is.
  local left = redis.call('PTTL', ARGV[1] .. chats[i])
  if left >= 0 then
    local at = now + math.max(left, 1)
    if not nxt or at < nxt then nxt = at end
  end
end
if #chats == limit then
  nxt = now + 1  -- more are due: come back at once
else
  local head = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf',
    'WITHSCORES', 'LIMIT', 0, 1)
  if head[2] then
    local at = tonumber(head[2])
    if not nxt or at < nxt then nxt = at end
  end
end
if nxt then
  redis.call('SET', KEYS[2], string.format('%d', nxt))
  return {#chats, nxt, now}
end
redis.call('DEL', KEYS[2])
return {#chats, -1, now}
