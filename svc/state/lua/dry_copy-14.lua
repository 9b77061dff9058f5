--[[
  dry_copy-14: copy the slice of one EventTrigger's state that reactive-7 reads for one
  (bucketing key, event) into scratch keys, for explain. Explain sends this, reactive-7 on the
  scratch keys, then a DEL of the scratch keys, as one MULTI/EXEC: the engine's own script
  decides, on a copy, and the live keys are only read (svc/explain.py).

  reactive-7 reads, of a trigger's state, only: the bucket of the event's bucketing key (and
  writes its end, satisfied mark and outbox record), the event's per-trigger seen mark, and the
  held events of that bucketing key (all lex-ranges under the prefix `<key>\0`). That slice is
  what is copied, so the cost does not grow with the trigger's other buckets or seen marks.

  Input:
    KEYS[1..7]  the trigger's keys, in TriggerKeys order:
                buckets, ends, satisfied, seen, outbox, held, heldat
    KEYS[8..14] scratch keys in the same order, under the same hash tag (same cluster slot);
                whatever they hold is deleted first
    ARGV[1] bucketing key (JSON array), as reactive-7's ARGV[5]
    ARGV[2] event id, as reactive-7's ARGV[1]

  Output: the number of held events copied
]]

local live = { buckets = KEYS[1], ends = KEYS[2], satisfied = KEYS[3], seen = KEYS[4],
  held = KEYS[6], heldat = KEYS[7] }
local scratch = { buckets = KEYS[8], ends = KEYS[9], satisfied = KEYS[10], seen = KEYS[11],
  outbox = KEYS[12], held = KEYS[13], heldat = KEYS[14] }
local key, event_id = ARGV[1], ARGV[2]

redis.call('DEL', scratch.buckets, scratch.ends, scratch.satisfied, scratch.seen,
  scratch.outbox, scratch.held, scratch.heldat)

local bucket = redis.call('HGET', live.buckets, key)
if bucket then
  redis.call('HSET', scratch.buckets, key, bucket)
end
local ends = redis.call('ZSCORE', live.ends, key)
if ends then
  redis.call('ZADD', scratch.ends, ends, key)
end
if redis.call('SISMEMBER', live.satisfied, key) == 1 then
  redis.call('SADD', scratch.satisfied, key)
end
local seen = redis.call('ZSCORE', live.seen, event_id)
if seen then
  redis.call('ZADD', scratch.seen, seen, event_id)
end

local prefix = key .. '\0'
local held = redis.call('ZRANGEBYLEX', live.held, '[' .. prefix, '[' .. prefix .. '\255')
for _, member in ipairs(held) do
  redis.call('ZADD', scratch.held, 0, member)
  local at = redis.call('ZSCORE', live.heldat, member)
  if at then
    redis.call('ZADD', scratch.heldat, at, member)
  end
end
return #held
