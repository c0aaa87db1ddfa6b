-- append: add one message to a chat's open batch and (re)arm its idle timer.
-- KEYS[1] = buf     P:{bN}:buf:<chat>   (list: "<received_ms>\t<json>")
-- KEYS[2] = timer   P:{bN}:timer:<chat> (string with PX: its expiry means "idle")
-- KEYS[3] = meta    P:{bN}:meta:<chat>  (hash)
-- KEYS[4] = due     P:{bN}:due          (zset chat -> deadline ms)
-- KEYS[5] = seen    P:{bN}:seen         (zset dedupe member -> received ms)
-- ARGV[1] = chat id
-- ARGV[2] = dedupe member ("" = no dedupe)
-- ARGV[3] = message JSON
-- ARGV[4] = idle_ms
-- ARGV[5] = max_wait_ms
-- ARGV[6] = max_messages
-- ARGV[7] = dedupe_window_ms
-- ARGV[8] = max_batch_bytes (the batch closes at once when its messages reach this size)
-- Returns {status, deadline_ms, count, now_ms, opened_ms}: status 1 = appended, 0 = duplicate.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chat = ARGV[1]

if ARGV[2] ~= '' and redis.call('ZSCORE', KEYS[5], ARGV[2]) then
  local d = redis.call('ZSCORE', KEYS[4], chat)
  return {0, tonumber(d or 0), redis.call('LLEN', KEYS[1]), now,
    tonumber(redis.call('HGET', KEYS[3], 'opened') or now)}
end

-- RPUSH is the first write and is refused under maxmemory (noeviction), so
-- an out-of-memory append stops here having written nothing: the timer is
-- not refreshed for a message that was not stored.
local count = redis.call('RPUSH', KEYS[1], string.format('%d', now) .. '\t' .. ARGV[3])

if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[5], now, ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. string.format('%d', now - tonumber(ARGV[7])))
end

local opened = tonumber(redis.call('HGET', KEYS[3], 'opened'))
if count == 1 or not opened then
  opened = now
  redis.call('HDEL', KEYS[3], 'held', 'manual')  -- a new batch starts unheld
end
redis.call('HSET', KEYS[3], 'opened', opened, 'last', now)
local size = redis.call('HINCRBY', KEYS[3], 'bytes', string.len(ARGV[3]))

local deadline = math.min(now + tonumber(ARGV[4]), opened + tonumber(ARGV[5]))
if count > 1 and redis.call('HEXISTS', KEYS[3], 'held') == 1 then
  deadline = opened + tonumber(ARGV[5])  -- held by an operator: only the max wait closes it
end
if count >= tonumber(ARGV[6]) or size >= tonumber(ARGV[8]) then
  deadline = now
end
redis.call('SET', KEYS[2], '1', 'PX', math.max(deadline - now, 1))
redis.call('ZADD', KEYS[4], deadline, chat)
return {1, deadline, count, now, opened}
