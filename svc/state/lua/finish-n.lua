--[[
  finish-n: leaving the causal-ordering gate (SEMANTICS 10.1 steps 5 and 7) for each event of
  a batch segment, in order: mark it seen, take its parked followers, and forget its own
  follower record. One call per segment instead of one per event (DESIGN, "Performance
  principles"); every key is under the `{ordering}` hash tag, so it is one Cluster slot.

  Input:
    KEYS[1] parked follower events (hash)    KEYS[2] waitlist
    KEYS[2i + 1] seen mark of event i    KEYS[2i + 2] event i's follower set    (i = 1..n)
    ARGV[1] wall clock now (us)   ARGV[2] safety-net TTL of the marks (ms)
    ARGV[i + 2] id of event i

  Output: { { follower event JSON, ... }, ... }: event i's released followers at index i
  (followers stay in the hash and the waitlist until their own finish forgets them, so a
  crash loses none: they come back as lost followers)
]]

local parked, waitlist = KEYS[1], KEYS[2]
local now, ttl = ARGV[1], ARGV[2]
local released = {}
for i = 1, #ARGV - 2 do
  local seen, followers, id = KEYS[2 * i + 1], KEYS[2 * i + 2], ARGV[i + 2]
  redis.call('SET', seen, now, 'PX', ttl)
  local ids = redis.call('SMEMBERS', followers)
  local events = {}
  if #ids > 0 then
    redis.call('DEL', followers)
    for _, follower in ipairs(ids) do
      local json = redis.call('HGET', parked, follower)
      if json then
        table.insert(events, json)
      end
    end
  end
  redis.call('HDEL', parked, id)
  redis.call('ZREM', waitlist, id)
  released[i] = events
end
return released
