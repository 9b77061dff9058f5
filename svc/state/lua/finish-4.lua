--[[
  finish-4: leaving the causal-ordering gate (SEMANTICS 10.1 steps 5 and 7): mark the event
  seen, take its parked followers, and forget its own follower record.

  Input:
    KEYS[1] seen mark of the event    KEYS[2] the event's follower set
    KEYS[3] parked follower events (hash)    KEYS[4] waitlist
    ARGV[1] event id   ARGV[2] wall clock now (us)   ARGV[3] safety-net TTL of the mark (ms)

  Output: { follower event JSON, ... } (followers stay in the hash and the waitlist until their
  own finish-4 forgets them, so a crash loses none: they come back as lost followers)
]]

redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local followers = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local events = {}
for _, id in ipairs(followers) do
  local json = redis.call('HGET', KEYS[3], id)
  if json then
    table.insert(events, json)
  end
end
return events
