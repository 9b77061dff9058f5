--[[
  lost-2: the parked followers whose leader never came (SEMANTICS 10.4): received at or before
  the cutoff. They are not removed here; each one's finish-n forgets it once evaluated.

  Input:
    KEYS[1] parked follower events (hash)   KEYS[2] waitlist
    ARGV[1] cutoff (us): wall clock now minus the lookback   ARGV[2] the most to return

  Output: { follower event JSON, ... }
]]

local events = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  local json = redis.call('HGET', KEYS[1], id)
  if json then
    table.insert(events, json)
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return events
