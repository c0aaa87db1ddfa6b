-- reject: keep a message that cannot be assigned to a chat, whole, for an
-- operator (no TTL). The id is a digest of the message as received, so the
-- provider's retries of the same bytes keep one entry.
-- KEYS[1] = rejected  P:{b0}:rejected (hash id -> JSON)
-- ARGV[1] = id
-- ARGV[2] = entry JSON (reason, path, source, raw) without its time
-- Returns 1 when the entry is new, 0 when it was kept already.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now) .. '\t' .. ARGV[2])
return 1
