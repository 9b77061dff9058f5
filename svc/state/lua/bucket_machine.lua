--[[
  Shared helpers (included by reactive_event.lua, so by reactive-7.lua and reactive-n.lua,
  and by proactive-7.lua and sweep-7.lua): the bucket state machine of SEMANTICS section 6
  over one trigger's keys.

  A trigger's context table `T` holds its keys and parameters:
    T.buckets   hash: bucketing key (JSON) -> encoded bucket
    T.ends      sorted set: bucketing key scored by bucket end (due buckets, sweep)
    T.satisfied set: keys whose count reached the threshold (proactive "remove satisfied")
    T.seen      sorted set: event ids already evaluated for this trigger, scored by wall time
    T.outbox    hash: firing id -> firing record (JSON), drained by the publisher
    T.held      sorted set, all scores 0: "<key>\0<occurred>\0<event id>" (SEMANTICS 6.2)
    T.heldat    sorted set: same members scored by the wall time they were held
    T.reactive, T.has_after, T.immediate, T.holds (booleans), T.threshold, T.within (us),
    T.seed (trigger id and state generation: seeds deterministic firing ids),
    T.now_wall (us), T.firings (list of outbox records written by this call),
    T.trace (list of decisions, for the evaluation span)

  A bucket is a table {s, e, c, lx, la, lo, op, le}: start, end (us), count, whether its
  last event was expected ('1'/'0') and an `after` event, that event's occurred (us), the
  last operation (a debugging breadcrumb, as Prefect's `last_operation`), and the last
  event's JSON ('' when none). Times are integers of microseconds; Lua numbers are doubles,
  exact up to 2^53, and are always written in full (tostring would round them): with %d,
  which formats through a 64-bit integer, while they are exact, else with %.0f (%d would
  wrap past 2^63; a window can reach that far). %.0f went through glibc's multi-precision
  float printer: ~6 % of Redis's instructions per evaluated event.
]]

local EXACT = 9007199254740992 -- 2^53

local function fmt(n)
  if n < EXACT and n > -EXACT then
    return string.format('%d', n)
  end
  return string.format('%.0f', n)
end

local function pad(n)
  if n < EXACT and n > -EXACT then
    return string.format('%020d', n)
  end
  return string.format('%020.0f', n)
end

local function encode_bucket(b)
  return table.concat({fmt(b.s), fmt(b.e), fmt(b.c), b.lx, b.la, fmt(b.lo), b.op, b.le}, '|')
end

local function decode_bucket(raw)
  if not raw then
    return nil
  end
  local s, e, c, lx, la, lo, op, le =
    string.match(raw, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  return {
    s = tonumber(s), e = tonumber(e), c = tonumber(c), lx = lx, la = la,
    lo = tonumber(lo), op = op, le = le,
  }
end

local function new_bucket(s, e, c, op)
  return { s = s, e = e, c = c, lx = '0', la = '0', lo = 0, op = op, le = '' }
end

local function set_last_event(b, ev)
  b.le = ev.json
  b.lx = ev.x
  b.la = ev.a
  b.lo = ev.occ
end

-- What this call knows of each bucket it has read or written (T.known, made on first use):
-- key -> { raw = the stored bucket, or false when there is none; e = its end }, so a bucket
-- is read from Redis at most once per call, and `ends` is written only when the end moves.
-- (Every write of a bucket puts its end in `ends`, so a stored bucket's end is there.)
local function known_buckets(T)
  local known = T.known
  if not known then
    known = {}
    T.known = known
  end
  return known
end

local function known_bucket(T, key)
  local known = known_buckets(T)
  local entry = known[key]
  if entry == nil then
    local raw = redis.call('HGET', T.buckets, key)
    entry = { raw = raw }
    if raw then
      entry.e = tonumber(string.match(raw, '^[^|]*|([^|]*)|'))
    end
    known[key] = entry
  end
  return entry
end

local function read_bucket(T, key)
  return decode_bucket(known_bucket(T, key).raw)
end

-- The bucket of `key` as 'start|end|count' ('' when there is none): what decision records
-- and explain show of it, without the last event's JSON.
local function brief_bucket(T, key)
  local raw = known_bucket(T, key).raw
  if not raw then
    return ''
  end
  return string.match(raw, '^([^|]*|[^|]*|[^|]*)|')
end

local function write_bucket(T, key, b)
  local raw = encode_bucket(b)
  local entry = known_bucket(T, key)
  redis.call('HSET', T.buckets, key, raw)
  if not (entry.raw and entry.e == b.e) then
    redis.call('ZADD', T.ends, fmt(b.e), key)
  end
  entry.raw = raw
  entry.e = b.e
  if not T.reactive then
    if b.c >= T.threshold then
      redis.call('SADD', T.satisfied, key)
    else
      redis.call('SREM', T.satisfied, key)
    end
  end
end

local function remove_bucket(T, key)
  redis.call('HDEL', T.buckets, key)
  redis.call('ZREM', T.ends, key)
  redis.call('SREM', T.satisfied, key)
  known_buckets(T)[key] = { raw = false }
end

-- Held events of `key` with start <= occurred < end (SEMANTICS 6.2).
local function held_count(T, key, s, e)
  if not T.holds then
    return 0
  end
  return redis.call('ZLEXCOUNT', T.held, '[' .. key .. '\0' .. pad(s), '(' .. key .. '\0' .. pad(e))
end

-- Write a bucket of window [s, e) and count c plus the held events in it, its last event `ev`
-- when given; `op` is the breadcrumb.
local function put_bucket(T, key, s, e, c, ev, op)
  local b = new_bucket(s, e, c + held_count(T, key, s, e), op)
  if ev then
    set_last_event(b, ev)
  end
  write_bucket(T, key, b)
  return b
end

-- ensure: insert if absent; never touch an existing one.
local function ensure_bucket(T, key, s, e, c, ev)
  return read_bucket(T, key) or put_bucket(T, key, s, e, c, ev, 'ensure_bucket[insert]')
end

-- start new: overwrite the window and count; last event only when given.
local function start_new_bucket(T, key, s, e, c, ev)
  return put_bucket(T, key, s, e, c, ev, 'start_new_bucket[update]')
end

-- A deterministic UUID (version 5 layout) from the trigger's seed and what caused the firing.
local function derived_uuid(seed, cause)
  local h = redis.sha1hex(seed .. '|' .. cause)
  local variant = string.format('%x', 8 + (tonumber(string.sub(h, 17, 17), 16) % 4))
  return string.sub(h, 1, 8) .. '-' .. string.sub(h, 9, 12) .. '-5' .. string.sub(h, 14, 16)
    .. '-' .. variant .. string.sub(h, 18, 20) .. '-' .. string.sub(h, 21, 32)
end

-- Record a firing in the outbox, in the same atomic step as the state change that decided it;
-- `b` is the bucket that fired (its window and count go along, for decision records).
local function fire(T, key, cause, event_json, at, b)
  local id = derived_uuid(T.seed, cause)
  local record = cjson.encode({
    id = id, key = key, event = event_json, at = fmt(at), triggered = fmt(T.now_wall),
    s = fmt(b.s), e = fmt(b.e), c = fmt(b.c),
  })
  redis.call('HSET', T.outbox, id, record)
  table.insert(T.firings, record)
  table.insert(T.trace, 'fired')
end

--[[
  evaluate(bucket, now, event?) of SEMANTICS 6. `ev` is nil on the proactive path, else
  {id, json, occ, x, a}. Returns the bucket as it stands afterwards, or nil.
]]
local function evaluate(T, key, b, now, ev)
  local pending = ev and 1 or 0
  -- 2. too early: late out-of-order events, the cooldown, future buckets
  if now < b.s then
    table.insert(T.trace, 'too_early')
    return b
  end
  -- the proactive restart below may keep the last event this increment replaces
  local previous = { json = b.le, x = b.lx, a = b.la, occ = b.lo }
  -- 3. spend the event in this window
  if pending == 1 and (T.immediate or (b.s <= now and now < b.e)) then
    b.c = b.c + 1
    set_last_event(b, ev)
    b.op = 'increment_bucket[update]'
    write_bucket(T, key, b)
    pending = 0
    table.insert(T.trace, 'counted')
  end
  -- 4. ready and meets
  local ready = T.reactive or b.e <= now
  local meets
  if T.reactive then
    meets = b.c >= T.threshold
  else
    meets = b.c < T.threshold
  end
  if ready and meets then
    -- 5. fire, then remove the bucket at once so a crash cannot fire it twice
    local cause
    if ev then
      T.nfired = T.nfired + 1
      cause = 'event:' .. ev.id .. '#' .. T.nfired
    else
      cause = 'window:' .. key .. '@' .. fmt(b.s) .. '-' .. fmt(b.e)
    end
    local event_json = b.le
    if ev then
      event_json = ev.json
    end
    fire(T, key, cause, event_json, ev and ev.occ or now, b)
    remove_bucket(T, key)
  elseif now < b.e then
    -- 6. not fired, window still open
    if ev and not T.reactive and not meets and ev.a == '1' and ev.x == '1' then
      -- the proactive restart ("after X expect X" pushes its deadline forward)
      local keep = previous.x == '1' and previous.a == '0' and previous.json ~= ''
        and previous.occ >= ev.occ
      remove_bucket(T, key)
      local nb = start_new_bucket(T, key, ev.occ, ev.occ + T.within, 0, keep and previous or ev)
      table.insert(T.trace, 'restarted')
      return nb
    end
    return b
  else
    table.insert(T.trace, 'window_closed')
  end
  -- 7. roll over
  if T.has_after then
    remove_bucket(T, key)
    table.insert(T.trace, 'disarmed')
    return nil
  end
  if T.within == 0 then
    return nil
  end
  local s = math.max(b.e, now)
  table.insert(T.trace, 'rolled_over')
  if T.reactive and pending == 1 then
    local nb = start_new_bucket(T, key, s, s + T.within, 0, nil)
    -- case 4: the event fell after the old window; it is counted in the new one
    return evaluate(T, key, nb, now, ev)
  end
  return start_new_bucket(T, key, s, s + T.within, pending, nil)
end
