-- replay: put dead-lettered batches of one chat back into delivery, once.
-- Their messages join the chat's open batch in arrival order (by the stored
-- received ms; both sides are already in arrival order, the merge only
-- interleaves) and the chat is made due now. The dead-letter entries are
-- removed in the same step, so a second (or concurrent) replay finds nothing.
-- KEYS[1] = buf       P:{bN}:buf:<chat>
-- KEYS[2] = timer     P:{bN}:timer:<chat>
-- KEYS[3] = meta      P:{bN}:meta:<chat>
-- KEYS[4] = due       P:{bN}:due
-- KEYS[5] = dead      P:{bN}:dead
-- KEYS[6] = wake      P:{bN}:wake (see wake.lua)
-- KEYS[5 + 2i], KEYS[6 + 2i] = P:{bN}:dead:<id_i>, P:{bN}:deadinfo:<id_i> (i = 1..n)
-- ARGV[1] = chat id
-- ARGV[1 + i] = batch id i (oldest first)
-- Returns {batches replayed, messages replayed}; {0, 0} when none of the
-- batches is dead-lettered (any more) for this chat.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chat = ARGV[1]

local ids, lists, infos = {}, {}, {}
local dead_items, seen = {}, {}
for i = 1, #ARGV - 1 do
  local list, info = KEYS[5 + 2 * i], KEYS[6 + 2 * i]
  if not seen[ARGV[1 + i]] and redis.call('ZSCORE', KEYS[5], ARGV[1 + i])
      and redis.call('HGET', info, 'chat') == chat then
    seen[ARGV[1 + i]] = true
    ids[#ids + 1], lists[#lists + 1], infos[#infos + 1] = ARGV[1 + i], list, info
    local items = redis.call('LRANGE', list, 0, -1)
    for j = 1, #items do
      dead_items[#dead_items + 1] = items[j]
    end
  end
end
if #ids == 0 then
  return {0, 0}
end
if #dead_items == 0 then
  -- Nothing to deliver (cannot happen through nack): just forget the entries.
  for i = 1, #ids do
    redis.call('ZREM', KEYS[5], ids[i])
    redis.call('DEL', lists[i], infos[i])
  end
  return {#ids, 0}
end

local function received(item)
  return tonumber(string.match(item, '^(%d+)\t') or '0')
end

local had_buf = redis.call('EXISTS', KEYS[1]) == 1
if not had_buf and #lists == 1 then
  redis.call('RENAME', lists[1], KEYS[1])
else
  -- Stable merge of two arrival-ordered lists: dead items first on ties.
  local open = redis.call('LRANGE', KEYS[1], 0, -1)
  local merged, a, b = {}, 1, 1
  -- The channel in effect in each list and at the merged tail (items.lua):
  -- an item that would take another list's channel gets its own list's.
  local in_dead, in_open, at_tail
  local function take(item, own)
    local part = carried(item)
    if part then
      at_tail = part
      return item, part
    end
    if own and own ~= at_tail then
      at_tail = own
      return carrying(item, own), own
    end
    return item, own
  end
  while a <= #dead_items or b <= #open do
    if b > #open or (a <= #dead_items and received(dead_items[a]) <= received(open[b])) then
      merged[#merged + 1], in_dead = take(dead_items[a], in_dead)
      a = a + 1
    else
      merged[#merged + 1], in_open = take(open[b], in_open)
      b = b + 1
    end
  end
  -- Stage the result behind the first dead list's items, so that the first
  -- write is an RPUSH: under maxmemory it is refused with nothing written.
  local stage = lists[1]
  local staged = redis.call('LLEN', stage)
  for i = 1, #merged, 1000 do
    redis.call('RPUSH', stage, unpack(merged, i, math.min(i + 999, #merged)))
  end
  redis.call('LTRIM', stage, staged, -1)
  redis.call('RENAME', stage, KEYS[1])
  for i = 2, #lists do
    redis.call('DEL', lists[i])
  end
end
redis.call('PERSIST', KEYS[1])
redis.call('HDEL', KEYS[3], 'ch')  -- the latest stored channel may be another now (items.lua)

local opened = tonumber(redis.call('HGET', KEYS[3], 'opened') or '')
if had_buf and opened and opened <= now then
  redis.call('HSET', KEYS[3], 'opened', opened)
else
  redis.call('HSET', KEYS[3], 'opened', now, 'last', now)
end
-- Due now: the timer expires at once, so the nudger/event path claims the
-- chat within milliseconds (the sweeper if no event comes); a batch in
-- flight makes the claim wait for its ack, never merge with it.
redis.call('SET', KEYS[2], '1', 'PX', 1)
redis.call('ZADD', KEYS[4], now, chat)
wake(KEYS[6], now)

for i = 1, #ids do
  redis.call('ZREM', KEYS[5], ids[i])
  redis.call('DEL', infos[i])
end
return {#ids, #dead_items}
