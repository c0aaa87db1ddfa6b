-- append: add one message to a chat's open batch and (re)arm its idle timer;
-- or apply an edit or a revoke to the message it names, when that message
-- is still in the open batch.
-- KEYS[1] = buf     P:{bN}:buf:<chat>   (list: "<received_ms>\t<json>")
-- KEYS[2] = timer   P:{bN}:timer:<chat> (string with PX: its expiry means "idle")
-- KEYS[3] = meta    P:{bN}:meta:<chat>  (hash)
-- KEYS[4] = due     P:{bN}:due          (zset chat -> deadline ms)
-- KEYS[5] = seen    P:{bN}:seen         (zset dedupe member -> received ms)
-- KEYS[6] = wake    P:{bN}:wake         (the moment the bucket's nudger wakes; see wake.lua)
-- ARGV[1] = chat id
-- ARGV[2] = dedupe member ("" = no dedupe)
-- ARGV[3] = message JSON
-- ARGV[4] = idle_ms
-- ARGV[5] = max_wait_ms
-- ARGV[6] = max_messages
-- ARGV[7] = dedupe_window_ms
-- ARGV[8] = max_batch_bytes (the batch closes at once when its messages reach this size)
-- ARGV[9] = "" or how the stored JSON of the message to change begins ('{"id":<id>,')
-- ARGV[10] = "edit" or "revoke" (with ARGV[9])
-- Returns {status, deadline_ms, count, now_ms, opened_ms}. Status:
--   1 appended, 0 duplicate,
--   2 edit applied: "\t<received_ms>\t<json>" added to the original's item,
--   3 revoke applied: the original removed from the open batch,
--   4 revoke applied and the open batch left empty: it is gone, never delivered.
-- An edit or revoke whose original is not in the open batch is appended (1).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chat = ARGV[1]

if ARGV[2] ~= '' and redis.call('ZSCORE', KEYS[5], ARGV[2]) then
  local d = redis.call('ZSCORE', KEYS[4], chat)
  return {0, tonumber(d or 0), redis.call('LLEN', KEYS[1]), now,
    tonumber(redis.call('HGET', KEYS[3], 'opened') or now)}
end

local function remember()
  if ARGV[2] ~= '' then
    redis.call('ZADD', KEYS[5], now, ARGV[2])
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. string.format('%d', now - tonumber(ARGV[7])))
  end
end

-- Arm the timer and the index for an open batch of `count` messages.
local function arm(count, opened, size)
  local deadline = math.min(now + tonumber(ARGV[4]), opened + tonumber(ARGV[5]))
  if count > 1 and redis.call('HEXISTS', KEYS[3], 'held') == 1 then
    deadline = opened + tonumber(ARGV[5])  -- held by an operator: only the max wait closes it
  end
  if count >= tonumber(ARGV[6]) or size >= tonumber(ARGV[8]) then
    deadline = now
  end
  redis.call('SET', KEYS[2], '1', 'PX', math.max(deadline - now, 1))
  redis.call('ZADD', KEYS[4], deadline, chat)
  wake(KEYS[6], deadline)
  return deadline
end

if ARGV[9] ~= '' then
  local prefix = ARGV[9]
  local items = redis.call('LRANGE', KEYS[1], 0, -1)
  for i = 1, #items do
    local item = items[i]
    local tab = string.find(item, '\t', 1, true)
    if tab and string.sub(item, tab + 1, tab + #prefix) == prefix then
      local opened = tonumber(redis.call('HGET', KEYS[3], 'opened') or now)
      local size
      local status = 2
      if ARGV[10] == 'revoke' then
        status = 3
        if #items == 1 then
          remember()
          redis.call('DEL', KEYS[1], KEYS[2])
          redis.call('ZREM', KEYS[4], chat)
          redis.call('HDEL', KEYS[3], 'opened', 'last', 'bytes', 'held', 'manual')
          return {4, 0, 0, now, opened}
        end
        -- LSET then LREM of a value no stored item can have (items start with digits).
        redis.call('LSET', KEYS[1], i - 1, '-')
        redis.call('LREM', KEYS[1], 1, '-')
        size = redis.call('HINCRBY', KEYS[3], 'bytes', tab - string.len(item))
      else
        redis.call('LSET', KEYS[1], i - 1,
          item .. '\t' .. string.format('%d', now) .. '\t' .. ARGV[3])
        size = redis.call('HINCRBY', KEYS[3], 'bytes', string.len(ARGV[3]))
      end
      remember()
      redis.call('HSET', KEYS[3], 'last', now)
      local count = #items - (status == 3 and 1 or 0)
      return {status, arm(count, opened, size), count, now, opened}
    end
  end
end

-- RPUSH is the first write and is refused under maxmemory (noeviction), so
-- an out-of-memory append stops here having written nothing: the timer is
-- not refreshed for a message that was not stored.
local count = redis.call('RPUSH', KEYS[1], string.format('%d', now) .. '\t' .. ARGV[3])
remember()

local opened = tonumber(redis.call('HGET', KEYS[3], 'opened'))
if count == 1 or not opened then
  opened = now
  redis.call('HDEL', KEYS[3], 'held', 'manual')  -- a new batch starts unheld
end
redis.call('HSET', KEYS[3], 'opened', opened, 'last', now)
local size = redis.call('HINCRBY', KEYS[3], 'bytes', string.len(ARGV[3]))
return {1, arm(count, opened, size), count, now, opened}
