-- items (prepended to the scripts that move stored messages): a stored item
-- is "<received_ms>\t<json>", followed by "\t<received_ms>\t<edit json>" for
-- each edit applied to it. A message's channel (the provider account the
-- chat is with) is stored once: the first item of a list, and any whose
-- channel differs from the one before it, end their first JSON with
-- ',"channel":{...}'; the others take the channel of the nearest item
-- before them that has one (service.models.order_messages).
local CHANNEL = ',"channel":{'

-- Where the item's first JSON ends (its closing brace).
local function first_json_end(item)
  local tab = string.find(item, '\t', 1, true)
  local after = string.find(item, '\t', tab + 1, true)
  return (after or (#item + 1)) - 1
end

-- The ',"channel":{...}' the item carries, or nil.
local function carried(item)
  local stop, at, from = first_json_end(item), nil, 1
  while true do
    local s = string.find(item, CHANNEL, from, true)
    if not s or s > stop then break end
    at, from = s, s + 1
  end
  if not at then return nil end
  local part = string.sub(item, at, stop - 1)
  if string.find(part, '}', 1, true) ~= #part then return nil end  -- not the last member
  return part
end

-- The item with ``part`` (a carried channel) at the end of its first JSON.
local function carrying(item, part)
  local stop = first_json_end(item)
  return string.sub(item, 1, stop - 1) .. part .. string.sub(item, stop)
end
