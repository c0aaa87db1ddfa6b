-- append: add one message to a chat's open batch and (re)arm its idle timer;
-- or apply an edit or a revoke to the message it names, when that message
-- is still in the open batch.
-- KEYS[1] = buf     P:{bN}:buf:<chat>   (list: "<received_ms>\t<json>")
-- KEYS[2] = timer   P:{bN}:timer:<chat> (string with PX: its expiry means "idle")
-- KEYS[3] = meta    P:{bN}:meta:<chat>  (hash)
-- KEYS[4] = due     P:{bN}:due          (zset chat -> deadline ms)
-- KEYS[5] = wake    P:{bN}:wake         (the moment the bucket's nudger wakes; see wake.lua)
-- KEYS[6..10] = the dedupe ring of the message's shard, P:{bN}:seen:<shard>:<0..4>
--           (sets of digests, one per time slot; keyspace.SeenEntry)
-- ARGV[1] = chat id
-- ARGV[2] = dedupe digest (a non-negative 63-bit integer; "" = no dedupe)
-- ARGV[3] = message JSON
-- ARGV[4] = idle_ms
-- ARGV[5] = max_wait_ms
-- ARGV[6] = max_messages
-- ARGV[7] = the dedupe ring's slot width in ms (a quarter of the window, rounded up)
-- ARGV[8] = max_batch_bytes (the batch closes at once when its messages reach this size)
-- ARGV[9] = "" or how the stored JSON of the message to change begins ('{"id":<id>,')
-- ARGV[10] = "edit" or "revoke" (with ARGV[9])
-- ARGV[11] = the message's channel JSON ("" = none), stored once (see items.lua)
-- ARGV[12] = a digest of ARGV[11]: meta 'ch' holds the one the open batch's
--            latest stored channel has, so an equal one is not stored again
-- Returns {status, deadline_ms, count, now_ms, opened_ms}. Status:
--   1 appended, 0 duplicate,
--   2 edit applied: "\t<received_ms>\t<json>" added to the original's item,
--   3 revoke applied: the original removed from the open batch,
--   4 revoke applied and the open batch left empty: it is gone, never delivered.
-- An edit or revoke whose original is not in the open batch is appended (1).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chat = ARGV[1]

-- The dedupe ring: slot s lives in KEYS[6 + s % 5], tagged by the member
-- -(s + 1) (digests are never negative). The five latest slots cover at
-- least the window; a set whose tag is not its latest slot's is stale.
local slot = math.floor(now / tonumber(ARGV[7]))
local slot_key = KEYS[6 + slot % 5]
local slot_tag = string.format('%d', -(slot + 1))
local slot_fresh = false  -- slot_key already holds this slot
if ARGV[2] ~= '' then
  for back = 0, 4 do
    local s = slot - back
    local tag = string.format('%d', -(s + 1))
    local got = redis.call('SMISMEMBER', KEYS[6 + s % 5], tag, ARGV[2])
    if back == 0 then slot_fresh = got[1] == 1 end
    if got[1] == 1 and got[2] == 1 then
      local d = redis.call('ZSCORE', KEYS[4], chat)
      return {0, tonumber(d or 0), redis.call('LLEN', KEYS[1]), now,
        tonumber(redis.call('HGET', KEYS[3], 'opened') or now)}
    end
  end
end

local function remember()
  if ARGV[2] ~= '' then
    if not slot_fresh then
      redis.call('DEL', slot_key)  -- the entries of five slots ago: out of the window
      redis.call('SADD', slot_key, slot_tag, ARGV[2])
    else
      redis.call('SADD', slot_key, ARGV[2])
    end
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
  wake(KEYS[5], deadline)
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
          redis.call('HDEL', KEYS[3], 'opened', 'last', 'bytes', 'held', 'manual', 'ch')
          return {4, 0, 0, now, opened}
        end
        local part = carried(item)
        if part then
          -- The channel goes to the next item, unless it has its own; the
          -- latest stored channel may change: the next append stores its own.
          redis.call('HDEL', KEYS[3], 'ch')
          if i < #items and not carried(items[i + 1]) then
            redis.call('LSET', KEYS[1], i, carrying(items[i + 1], part))
            redis.call('HINCRBY', KEYS[3], 'bytes', #part)
          end
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
local json = ARGV[3]
local carries = ARGV[11] ~= '' and
  (redis.call('HGET', KEYS[3], 'ch') ~= ARGV[12] or redis.call('EXISTS', KEYS[1]) == 0)
if carries then
  json = string.sub(json, 1, -2) .. ',"channel":' .. ARGV[11] .. '}'
end
local count = redis.call('RPUSH', KEYS[1], string.format('%d', now) .. '\t' .. json)
remember()
if carries then
  redis.call('HSET', KEYS[3], 'ch', ARGV[12])
end

local opened = tonumber(redis.call('HGET', KEYS[3], 'opened'))
if count == 1 or not opened then
  opened = now
  redis.call('HDEL', KEYS[3], 'held', 'manual')  -- a new batch starts unheld
end
redis.call('HSET', KEYS[3], 'opened', opened, 'last', now)
local size = redis.call('HINCRBY', KEYS[3], 'bytes', string.len(json))
return {1, arm(count, opened, size), count, now, opened}
