--[[
  retire-1: drop automations found without state from the active set, each unless it was
  touched since the periodic evaluation began to look (a replica ran one of its scripts
  meanwhile, which may have left state the look missed). Times are Redis's own (touch-1).

  Input:
    KEYS[1] the active set (sorted set: automation id -> when last touched, us)
    ARGV[1] when the look began (us, from `active` below)
    ARGV[2..n] automation ids

  Output: how many were dropped
]]

local since = tonumber(ARGV[1])
local dropped = 0
for i = 2, #ARGV do
  local touched = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if touched and tonumber(touched) <= since then
    redis.call('ZREM', KEYS[1], ARGV[i])
    dropped = dropped + 1
  end
end
return dropped
