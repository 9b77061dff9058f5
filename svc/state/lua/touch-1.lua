--[[
  touch-1: mark automations active, now (Redis's own clock): one of their triggers' scripts
  is about to run. The periodic evaluation visits the state of active automations only, so
  it costs what is in use rather than what is loaded (DESIGN, "Performance principles").
  Sent first in the pipeline of those scripts, so an automation with state is always active.

  Input:
    KEYS[1] the active set (sorted set: automation id -> when last touched, us)
    ARGV[1..n] automation ids

  Output: the time it was touched at (us, as a string); with no ids, only the time now
]]

local time = redis.call('TIME')
local now = string.format('%.0f', tonumber(time[1]) * 1000000 + tonumber(time[2]))
for i = 1, #ARGV do
  redis.call('ZADD', KEYS[1], now, ARGV[i])
end
return now
