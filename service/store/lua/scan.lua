-- scan: what the sweeper must recover in one bucket.
-- KEYS[1] = due       P:{bN}:due
-- KEYS[2] = inflight  P:{bN}:inflight
-- ARGV[1] = grace_ms  chats overdue by more than this with no claim
-- ARGV[2] = limit
-- Returns {overdue chats, chats whose in-flight lease ran out}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local overdue = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf',
  string.format('%d', now - tonumber(ARGV[1])), 'LIMIT', 0, tonumber(ARGV[2]))
local leases = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now),
  'LIMIT', 0, tonumber(ARGV[2]))
return {overdue, leases}
