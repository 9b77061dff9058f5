--[[
  dry_copy_composite-6: copy the state of one composite trigger that composite-3 reads for one
  child firing into scratch keys, for explain. Explain sends this, composite-3 on the scratch
  keys, then a DEL of the scratch keys, as one MULTI/EXEC: the engine's own script decides, on
  a copy, and the live keys are only read (svc/explain.py).

  composite-3 reads every stored child firing (a hash with one field per child trigger, so
  small) and whether a child firing was applied already; that is what is copied, for every
  child firing explain is about to apply (one event may fire several children).

  Input:
    KEYS[1..3] the composite's keys, in CompositeKeys order: children, applied, outbox
    KEYS[4..6] scratch keys in the same order, under the same hash tag (same cluster slot);
               whatever they hold is deleted first
    ARGV[1..n] child firing ids, as composite-3's ARGV[2]

  Output: the number of stored child firings copied
]]

local children, applied = KEYS[1], KEYS[2]
local scratch_children, scratch_applied, scratch_outbox = KEYS[4], KEYS[5], KEYS[6]

redis.call('DEL', scratch_children, scratch_applied, scratch_outbox)
local stored = redis.call('HGETALL', children)
for i = 1, #stored, 2 do
  redis.call('HSET', scratch_children, stored[i], stored[i + 1])
end
for _, firing_id in ipairs(ARGV) do
  local at = redis.call('ZSCORE', applied, firing_id)
  if at then
    redis.call('ZADD', scratch_applied, at, firing_id)
  end
end
return #stored / 2
