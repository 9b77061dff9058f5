--[[
  composite-3: record one child firing of a composite trigger and decide whether the composite
  fires (SEMANTICS 7.2 step 2, with Decision 1: times are event times), atomically and
  idempotently by child firing id, so a redelivered child firing is applied once.

  Input:
    KEYS[1] children   hash: child trigger id -> stored child firing (JSON record)
    KEYS[2] applied    sorted set: child firing ids already applied, scored by wall time
    KEYS[3] outbox     hash: the composite's own firing records
    ARGV[1] child trigger id
    ARGV[2] child firing id
    ARGV[3] child firing record (JSON with at least `id` and `at`, the event time in us)
    ARGV[4] child firing event time (us)
    ARGV[5] composite `within` (us), or '' when null (stored firings never expire)
    ARGV[6] kind: 'compound' or 'sequence'
    ARGV[7] expected firings
    ARGV[8] the composite's current child trigger ids, in declaration order, space-separated
    ARGV[9] wall clock now (us): the composite firing's `triggered`
    ARGV[10] seed of deterministic firing ids (composite id and state generation)

  Output: { decision, firing record? }
    decision: 'duplicate' (already applied), 'stored' (not ready), 'fired'
    firing record: JSON {id, at, triggered, children: [child records in firing order],
                         completing: id of the child firing that completed it}
]]

--- @include "bucket_machine.lua"

local children, applied, outbox = KEYS[1], KEYS[2], KEYS[3]
local child_id, firing_id, record = ARGV[1], ARGV[2], ARGV[3]
local at = tonumber(ARGV[4])

if redis.call('ZSCORE', applied, firing_id) then
  return { 'duplicate' }
end
redis.call('ZADD', applied, ARGV[9], firing_id)

-- stored firings older than `within` before this one expire (strictly older)
if ARGV[5] ~= '' then
  local horizon = at - tonumber(ARGV[5])
  for _, stored in ipairs(redis.call('HVALS', children)) do
    local decoded = cjson.decode(stored)
    if tonumber(decoded.at) < horizon then
      redis.call('HDEL', children, decoded.trigger_id)
    end
  end
end

-- a newer firing of the same child replaces the older one
redis.call('HSET', children, child_id, record)

-- read the stored firings of the current children, in declaration order
local ids = {}
for id in string.gmatch(ARGV[8], '%S+') do
  table.insert(ids, id)
end
local stored = {}
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', children, id)
  if raw then
    local decoded = cjson.decode(raw)
    table.insert(stored, { id = id, at = tonumber(decoded.at), raw = raw, fid = decoded.id })
  end
end

local ready
if ARGV[6] == 'sequence' then
  -- every child present once, in declaration order, each strictly later than the previous
  ready = #stored == #ids
  for i = 2, #stored do
    if not (stored[i].at > stored[i - 1].at) then
      ready = false
    end
  end
else
  ready = #stored >= tonumber(ARGV[7])
end
if not ready then
  return { 'stored' }
end

-- claim exactly the firings read: delete them and fire
table.sort(stored, function(l, r)
  if l.at == r.at then
    return l.fid < r.fid
  end
  return l.at < r.at
end)
local raws, fids = {}, {}
for _, s in ipairs(stored) do
  redis.call('HDEL', children, s.id)
  table.insert(raws, s.raw)
  table.insert(fids, s.fid)
end
local id = derived_uuid(ARGV[10], 'children:' .. table.concat(fids, ','))
local parent = '{"id":"' .. id .. '","at":"' .. ARGV[4] .. '","triggered":"' .. ARGV[9]
  .. '","completing":"' .. firing_id .. '","children":[' .. table.concat(raws, ',') .. ']}'
redis.call('HSET', outbox, id, parent)
return { 'fired', parent }
