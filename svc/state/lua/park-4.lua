--[[
  park-4: the causal-ordering gate for an event that `follows` a leader (SEMANTICS 10.1 step 3):
  proceed if the leader was seen, otherwise park the follower, in one atomic step with the
  leader's finish-n so a follower can never be parked after its leader released its followers.

  Input:
    KEYS[1] seen mark of the leader    KEYS[2] the leader's follower set
    KEYS[3] parked follower events (hash: id -> JSON)    KEYS[4] waitlist (id scored by received)
    ARGV[1] follower event id   ARGV[2] follower event JSON   ARGV[3] follower received (us)
    ARGV[4] wall clock now (us)   ARGV[5] seen-mark horizon (us): older marks count as unseen
    ARGV[6] safety-net TTL of the leader's follower set (ms): a leader that never comes (or a
            log event, never marked seen) leaves it behind once its followers were released
            as lost followers, 15 minutes after they were received

  Output: 'proceed' or 'parked'
]]

local marked = redis.call('GET', KEYS[1])
if marked and tonumber(marked) > tonumber(ARGV[4]) - tonumber(ARGV[5]) then
  return 'proceed'
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 'parked'
