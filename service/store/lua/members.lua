-- members: the live service processes of a deployment, for sharing buckets.
-- KEYS[1] = members  P:{b0}:members (zset process id -> heartbeat deadline ms)
-- ARGV[1] = process id
-- ARGV[2] = lease_ms: the process is live until now + lease_ms ("0": it leaves)
-- Returns {now_ms, live process ids...}: every process computes the same
-- owner for each bucket from the same list, so none is told what it owns.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
if lease > 0 then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
table.insert(live, 1, now)
return live
