--[[
  Shared by reactive-7.lua and reactive-n.lua: `react(KEYS, ARGV)` evaluates one event for
  one trigger exactly as reactive-7's header says, on the keys and arguments it is given
  (reactive-7's own, or one pair's slice of reactive-n's), and returns reactive-7's answer.
]]

--- @include "bucket_machine.lua"

local function react(KEYS, ARGV)
  local flags = ARGV[6]
  local T = {
    buckets = KEYS[1], ends = KEYS[2], satisfied = KEYS[3], seen = KEYS[4], outbox = KEYS[5],
    held = KEYS[6], heldat = KEYS[7],
    reactive = string.sub(flags, 1, 1) == '1',
    has_after = string.sub(flags, 2, 2) == '1',
    immediate = string.sub(flags, 3, 3) == '1',
    holds = string.sub(flags, 4, 4) == '1',
    threshold = tonumber(ARGV[7]), within = tonumber(ARGV[8]), seed = ARGV[10],
    now_wall = tonumber(ARGV[4]), firings = {}, trace = {}, nfired = 0,
  }
  local ev = {
    id = ARGV[1], json = ARGV[2], occ = tonumber(ARGV[3]),
    a = string.sub(flags, 5, 5), x = string.sub(flags, 6, 6),
  }
  local key = ARGV[5]
  local lookback = tonumber(ARGV[9])
  local horizon = tonumber(ARGV[11])

  local before = brief_bucket(T, key)

  -- The answer: the decision, the bucket before and after, then every firing record.
  local function respond(decision)
    local result = { decision, before, brief_bucket(T, key) }
    for _, record in ipairs(T.firings) do
      table.insert(result, record)
    end
    return result
  end

  -- Decision 3: an event is evaluated at most once per trigger, whatever is redelivered.
  if redis.call('ZADD', T.seen, 'NX', fmt(T.now_wall), ev.id) == 0 then
    return respond('duplicate')
  end

  -- Hold an expect-only event for the windows that open later over it (SEMANTICS 6.2).
  local function hold_event()
    local prefix = key .. '\0'
    local member = prefix .. pad(ev.occ) .. '\0' .. ev.id
    redis.call('ZADD', T.held, 0, member)
    redis.call('ZADD', T.heldat, fmt(T.now_wall), member)
    local drop = {}
    -- the horizon is measured from the newest held event of this key
    local newest = redis.call('ZREVRANGEBYLEX', T.held, '[' .. prefix .. '\255', '[' .. prefix,
      'LIMIT', 0, 1)[1]
    local newest_occ = tonumber(string.sub(newest, #prefix + 1, #prefix + 20))
    for _, m in ipairs(redis.call('ZRANGEBYLEX', T.held, '[' .. prefix,
        '(' .. prefix .. pad(newest_occ - horizon))) do
      table.insert(drop, m)
    end
    -- each epoch-aligned slot `within` wide keeps its first and last `threshold` events
    if T.threshold >= 0 then
      local slot = math.floor(ev.occ / T.within) * T.within
      local in_slot = redis.call('ZRANGEBYLEX', T.held, '[' .. prefix .. pad(slot),
        '(' .. prefix .. pad(slot + T.within))
      for i = T.threshold + 1, #in_slot - T.threshold do
        table.insert(drop, in_slot[i])
      end
    end
    for _, m in ipairs(drop) do
      redis.call('ZREM', T.held, m)
      redis.call('ZREM', T.heldat, m)
    end
    table.insert(T.trace, 'held')
  end

  local bucket = nil
  -- 4.2: an `after` event arms the bucket (-1 when it will count itself just below)
  if T.has_after and ev.a == '1' then
    local initial = (ev.x == '1') and -1 or 0
    bucket = ensure_bucket(T, key, ev.occ, ev.occ + T.within, initial, ev)
    table.insert(T.trace, 'armed')
  end
  -- 4.3: the first window of a trigger without `after` is backdated by the lookback
  if not bucket and not T.has_after and ev.x == '1' then
    bucket = ensure_bucket(T, key, ev.occ - lookback, ev.occ + T.within, 0, ev)
  end
  -- 4.4: after-only events just arm
  if ev.x ~= '1' then
    return respond(table.concat(T.trace, ' ') ~= '' and table.concat(T.trace, ' ') or 'ignored')
  end
  -- 4.5: an expected event of an unarmed trigger
  if not bucket then
    if T.holds then
      hold_event()
    end
    bucket = read_bucket(T, key)
    if not bucket then
      table.insert(T.trace, 'ignored')
      return respond(table.concat(T.trace, ' '))
    end
  end
  -- 4.6
  evaluate(T, key, bucket, ev.occ, ev)
  if #T.trace == 0 then
    table.insert(T.trace, 'unchanged')
  end
  return respond(table.concat(T.trace, ' '))
end
