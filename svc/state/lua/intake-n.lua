--[[
  intake-n: what intake needs to know of each event of a fetched batch before evaluating it
  (SEMANTICS 10): was it seen (evaluated) within the horizon, so this copy is a duplicate, and
  do followers wait for it, so its segment ends with it. Reads only.

  Input:
    KEYS[2i - 1] seen mark of event i    KEYS[2i] event i's follower set    (i = 1..n)
    ARGV[1] wall clock now (us)   ARGV[2] horizon (us): older marks count as unseen

  Output: { seen_1, has_followers_1, seen_2, ... }, each 1 or 0
]]

local oldest = tonumber(ARGV[1]) - tonumber(ARGV[2])
local answer = {}
for i = 1, #KEYS / 2 do
  local mark = redis.call('GET', KEYS[2 * i - 1])
  answer[2 * i - 1] = (mark and tonumber(mark) > oldest) and 1 or 0
  answer[2 * i] = redis.call('EXISTS', KEYS[2 * i])
end
return answer
