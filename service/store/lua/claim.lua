-- claim: close a chat's open batch and take it for delivery.
-- Called for every expired timer event by every service replica, and by the
-- sweeper for chats overdue with no claim; exactly one caller wins.
-- KEYS[1] = buf       P:{bN}:buf:<chat>
-- KEYS[2] = timer     P:{bN}:timer:<chat>
-- KEYS[3] = meta      P:{bN}:meta:<chat>
-- KEYS[4] = due       P:{bN}:due
-- KEYS[5] = inflight  P:{bN}:inflight     (zset chat -> lease deadline ms)
-- KEYS[6] = proc      P:{bN}:proc:<batch_id> (unique: RENAME never overwrites a batch)
-- KEYS[7] = wake      P:{bN}:wake (see wake.lua)
-- ARGV[1] = chat id
-- ARGV[2] = batch id
-- ARGV[3] = lease_ms
-- ARGV[4] = max_messages
-- ARGV[5] = idle_ms
-- ARGV[6] = max_wait_ms
-- ARGV[7] = lease token
-- ARGV[8] = "1" when the sweeper recovers the chat, else "0"
-- ARGV[9] = max_batch_bytes
-- Returns one of:
--   {1, seq, opened_ms, closed_ms, deadline_ms, reason, attempt, {items}}  claimed
--   {2}          the timer runs again (a new message arrived): not idle
--   {3}          nothing due: another caller claimed it, or no open batch
--   {4, lease}   the chat has a batch in flight; this one waits for its ack
--   {5}          due but empty (index entry dropped)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chat = ARGV[1]

local deadline = redis.call('ZSCORE', KEYS[4], chat)
if not deadline then
  return {3}
end
deadline = tonumber(deadline)
-- EXISTS also deletes an overdue timer (publishing its event): a timer that
-- is still there was re-armed by a message that arrived since.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {2}
end
if redis.call('HEXISTS', KEYS[3], 'batch') == 1 then
  -- One batch in flight per chat. Park the entry at the lease deadline: the
  -- ack re-arms it at once, and the sweeper finds it if the lease runs out.
  local lease = tonumber(redis.call('ZSCORE', KEYS[5], chat) or now)
  redis.call('ZADD', KEYS[4], lease, chat)
  return {4, lease}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[4], chat)
  redis.call('HDEL', KEYS[3], 'opened', 'last', 'bytes', 'held', 'manual', 'ch')
  return {5}
end

redis.call('RENAME', KEYS[1], KEYS[6])
redis.call('PERSIST', KEYS[6])
local opened = tonumber(redis.call('HGET', KEYS[3], 'opened') or now)
local size = tonumber(redis.call('HGET', KEYS[3], 'bytes') or 0)
local count = redis.call('LLEN', KEYS[6])
local max = tonumber(ARGV[4])
local reason = 'idle'
if redis.call('HEXISTS', KEYS[3], 'manual') == 1 then
  reason = 'manual'
elseif ARGV[8] == '1' then
  reason = 'recovered'
elseif count >= max then
  reason = 'max_messages'
elseif size >= tonumber(ARGV[9]) then
  reason = 'max_bytes'
elseif deadline >= opened + tonumber(ARGV[6]) then
  reason = 'max_wait'
end

if count > max then
  -- Messages that arrived after the batch filled up open the next batch.
  local extra = redis.call('LRANGE', KEYS[6], max, -1)
  if not carried(extra[1]) then
    -- The next batch's first item carries the channel (items.lua): the one
    -- in effect where the list is cut, if any.
    local taken = redis.call('LRANGE', KEYS[6], 0, max - 1)
    for j = #taken, 1, -1 do
      local part = carried(taken[j])
      if part then
        extra[1] = carrying(extra[1], part)
        break
      end
    end
  end
  redis.call('LTRIM', KEYS[6], 0, max - 1)
  for i = 1, #extra, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(extra, i, math.min(i + 999, #extra)))
  end
  local next_deadline = now + math.min(tonumber(ARGV[5]), tonumber(ARGV[6]))
  if #extra >= max then
    next_deadline = now
  end
  local extra_bytes = 0
  for i = 1, #extra do
    -- stored items are "<received_ms>\t<json>"; the size counts the json
    extra_bytes = extra_bytes + string.len(extra[i]) - string.find(extra[i], '\t', 1, true)
  end
  redis.call('HSET', KEYS[3], 'opened', now, 'last', now, 'bytes', extra_bytes)
  redis.call('HDEL', KEYS[3], 'held', 'manual')
  redis.call('SET', KEYS[2], '1', 'PX', math.max(next_deadline - now, 1))
  redis.call('ZADD', KEYS[4], next_deadline, chat)
  wake(KEYS[7], next_deadline)
else
  redis.call('HDEL', KEYS[3], 'opened', 'last', 'bytes', 'held', 'manual', 'ch')
  redis.call('ZREM', KEYS[4], chat)
end

local seq = redis.call('HINCRBY', KEYS[3], 'seq', 1)
redis.call('HSET', KEYS[3], 'batch', ARGV[2], 'token', ARGV[7], 'attempt', 1,
  'bseq', seq, 'bopened', opened, 'bclosed', now, 'bdeadline', deadline, 'breason', reason)
redis.call('HDEL', KEYS[3], 'error')
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[3]), chat)
return {1, seq, opened, now, deadline, reason, 1, redis.call('LRANGE', KEYS[6], 0, -1)}
