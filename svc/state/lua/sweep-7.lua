--[[
  sweep-7: the periodic clean-up of one EventTrigger's state (SEMANTICS 9 step 4, 6.2): delete
  buckets whose end is at or before the cutoff, held events held long ago whose key has no
  open bucket, and per-trigger seen marks past their horizon.

  Input:
    KEYS[1] buckets   KEYS[2] ends   KEYS[3] satisfied   KEYS[4] seen   KEYS[5] outbox
    KEYS[6] held      KEYS[7] heldat
    ARGV[1] bucket cutoff (us): as_of minus the expired-bucket buffer, or '' to keep buckets
    ARGV[2] wall clock now (us)
    ARGV[3] held-event retention (us): held events held before now - retention may go, or ''
            to keep them (Prefect sweeps held events first, buckets last, in one periodic run)
    ARGV[4] seen-mark retention (us), or '' to keep them

  Output: { buckets deleted, held events deleted, seen marks deleted }
]]

--- @include "bucket_machine.lua"

local T = {
  buckets = KEYS[1], ends = KEYS[2], satisfied = KEYS[3], seen = KEYS[4], outbox = KEYS[5],
  held = KEYS[6], heldat = KEYS[7],
}
local now = tonumber(ARGV[2])

local expired = {}
if ARGV[1] ~= '' then
  expired = redis.call('ZRANGEBYSCORE', T.ends, '-inf', ARGV[1])
  for _, key in ipairs(expired) do
    remove_bucket(T, key)
  end
end

local dropped = 0
if ARGV[3] ~= '' then
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', T.heldat, '-inf',
      '(' .. fmt(now - tonumber(ARGV[3])))) do
    local key = string.sub(member, 1, string.find(member, '\0', 1, true) - 1)
    local b = read_bucket(T, key)
    if not (b and b.e > now) then
      redis.call('ZREM', T.held, member)
      redis.call('ZREM', T.heldat, member)
      dropped = dropped + 1
    end
  end
end

local unseen = 0
if ARGV[4] ~= '' then
  unseen = redis.call('ZREMRANGEBYSCORE', T.seen, '-inf', '(' .. fmt(now - tonumber(ARGV[4])))
end
return { #expired, dropped, unseen }
