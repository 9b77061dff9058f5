--[[
  reactive-n: reactive-7 for several (event, trigger) pairs in one call, pair after pair in the
  order given, each exactly as its own reactive-7 call would (the whole call is atomic, as a
  pipeline of reactive-7 calls is not). One call per batch segment instead of one per pair:
  the script's set-up and Redis's per-call work are paid once (DESIGN, "Performance
  principles"). Keys of different triggers go in one call, so only on a single Redis, not
  on Redis Cluster (there the engine sends reactive-7 calls).

  Input:
    KEYS[7(i - 1) + 1 .. 7i]    pair i's KEYS, as reactive-7's
    ARGV[11(i - 1) + 1 .. 11i]  pair i's ARGV, as reactive-7's

  Output: { answer 1, answer 2, ... }: pair i's answer as reactive-7 gives it
]]

--- @include "reactive_event.lua"

local answers = {}
for i = 0, #KEYS / 7 - 1 do
  local k, a = 7 * i, 11 * i
  answers[i + 1] = react(
    { KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6], KEYS[k + 7] },
    { ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6],
      ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], ARGV[a + 10], ARGV[a + 11] })
end
return answers
