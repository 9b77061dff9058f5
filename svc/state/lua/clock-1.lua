--[[
  clock-1: tick the events clock shared by every replica (SEMANTICS 11, Decision 4) and return
  its offset.

  Input:
    KEYS[1] the clock (hash: clock, last_tick, both us)
    ARGV[1] the latest `occurred` of the events ticking it (us), already capped at the wall
            clock, or '' to only read the offset
    ARGV[2] wall clock now (us)

  Output: the offset (us, as a string): clock - last_tick, '0' when never ticked
]]

local clock = tonumber(redis.call('HGET', KEYS[1], 'clock'))
if ARGV[1] ~= '' then
  local t = tonumber(ARGV[1])
  if not clock or t >= clock then
    clock = t
    redis.call('HSET', KEYS[1], 'clock', string.format('%.0f', t))
  end
  redis.call('HSET', KEYS[1], 'last_tick', ARGV[2])
end
if not clock then
  return '0'
end
local last_tick = tonumber(redis.call('HGET', KEYS[1], 'last_tick'))
return string.format('%.0f', clock - last_tick)
