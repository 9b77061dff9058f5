--[[
  proactive-7: proactive evaluation of one Proactive EventTrigger as of a clock-adjusted time
  (SEMANTICS 8), reading only the buckets that are due (end <= as_of), never all of them.

  Input:
    KEYS[1] buckets   KEYS[2] ends   KEYS[3] satisfied   KEYS[4] seen   KEYS[5] outbox
    KEYS[6] held      KEYS[7] heldat
    ARGV[1] as_of (us): wall clock plus the events-clock offset
    ARGV[2] wall clock now (us): the firing's `triggered`
    ARGV[3] trigger flags, one character each, '1' or '0': has_after, holds_events,
            for_each_empty
    ARGV[4] threshold
    ARGV[5] within (us)
    ARGV[6] seed of deterministic firing ids
    ARGV[7] the most due buckets to evaluate in this call (the caller calls again while
            `more` is 1)
    ARGV[8] the bucketing key of the global bucket (JSON of the empty key, `[]`)

  Output: { next_run (us, as a string), more ('1' when due buckets remain), firing record, ... }
]]

--- @include "bucket_machine.lua"

local flags = ARGV[3]
local as_of = tonumber(ARGV[1])
local T = {
  buckets = KEYS[1], ends = KEYS[2], satisfied = KEYS[3], seen = KEYS[4], outbox = KEYS[5],
  held = KEYS[6], heldat = KEYS[7],
  reactive = false, immediate = false,
  has_after = string.sub(flags, 1, 1) == '1',
  holds = string.sub(flags, 2, 2) == '1',
  threshold = tonumber(ARGV[4]), within = tonumber(ARGV[5]), seed = ARGV[6],
  now_wall = tonumber(ARGV[2]), firings = {}, trace = {}, nfired = 0,
}
local limit = tonumber(ARGV[7])
local next_run = as_of + T.within

-- 3. a trigger without for_each has one global bucket, ensured here (quirk 16.8: even
--    when it has `after`)
if string.sub(flags, 3, 3) == '1' then
  ensure_bucket(T, ARGV[8], as_of, as_of + T.within, 0, nil)
end

-- 4. remove satisfied buckets
for _, key in ipairs(redis.call('SMEMBERS', T.satisfied)) do
  remove_bucket(T, key)
end

-- 5. evaluate the due buckets; the others are open (or in the future) and would not change
local due = redis.call('ZRANGEBYSCORE', T.ends, '-inf', fmt(as_of), 'LIMIT', 0, limit)
for _, key in ipairs(due) do
  local b = read_bucket(T, key)
  if b then
    local after = evaluate(T, key, b, as_of, nil)
    if after and after.e > as_of and after.e < next_run then
      next_run = after.e
    end
  else
    redis.call('ZREM', T.ends, key)
  end
end
local more = '0'
if #due == limit then
  more = '1'
end
local upcoming = redis.call('ZRANGEBYSCORE', T.ends, '(' .. fmt(as_of), '+inf', 'WITHSCORES',
  'LIMIT', 0, 1)
if upcoming[2] and tonumber(upcoming[2]) < next_run then
  next_run = tonumber(upcoming[2])
end

local result = { fmt(next_run), more }
for _, record in ipairs(T.firings) do
  table.insert(result, record)
end
return result
