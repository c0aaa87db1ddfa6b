-- report: count an error a provider reported (tied to no chat) and keep the
-- latest few for `batcher watch`.
-- KEYS[1] = counts  P:{b0}:perrors        (hash "<source>:<code>" -> count)
-- KEYS[2] = recent  P:{b0}:perrors:recent (list, newest first)
-- ARGV[1] = "<source>:<code>"
-- ARGV[2] = error JSON
-- ARGV[3] = how many to keep in `recent`
-- Returns the count of that source and code.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('LPUSH', KEYS[2], string.format('%d', now) .. '\t' .. ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return n
