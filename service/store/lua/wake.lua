-- wake (prepended to the scripts that set a deadline): tell the bucket's
-- owner about a deadline earlier than the one its nudger sleeps until.
-- wake_key P:{bN}:wake holds that moment (ms); the nudge script sets it, or
-- deletes it when nothing in the bucket is due. A deadline before it is
-- published on the channel of the same name, and becomes the new moment.
local function wake(wake_key, deadline)
  local planned = redis.call('GET', wake_key)
  if not planned or deadline < tonumber(planned) then
    redis.call('SET', wake_key, string.format('%d', deadline))
    redis.call('PUBLISH', wake_key, string.format('%d', deadline))
  end
end

