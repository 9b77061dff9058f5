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
    decision: 'duplicate' (already applied), 'expired' (older than `within` before another
    child's stored firing: not stored, nothing changed), 'stored' (not ready), 'fired'
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

-- stored firings strictly older than `within` before the newest one expire. Prefect measures
-- from this firing, always its newest (wall clock); on event times a firing can be processed
-- after one that occurred later, so the horizon is measured from the newest firing, and a
-- firing already too old for it expires at once, leaving the stored ones as they are:
-- children that occurred further apart than `within` never fire the composite, whatever
-- order they are processed in (Decision 1)
if ARGV[5] ~= '' then
  local times, newest = {}, at
  local entries = redis.call('HGETALL', children)
  for i = 1, #entries, 2 do
    if entries[i] ~= child_id then
      local t = tonumber(cjson.decode(entries[i + 1]).at)
      times[entries[i]] = t
      newest = math.max(newest, t)
    end
  end
  local horizon = newest - tonumber(ARGV[5])
  if at < horizon then
    return { 'expired' }
  end
  for id, t in pairs(times) do
    if t < horizon then
      redis.call('HDEL', children, id)
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
