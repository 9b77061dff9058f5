--[[
  lease_renew-1: extend the periodic-evaluation lease, only for the replica that holds it
  (compare-and-renew), so a replica whose lease expired never extends another's.

  Input:
    KEYS[1] the lease (string: the holder's token)
    ARGV[1] this replica's token
    ARGV[2] the lease's time to live (ms)

  Output: 1 renewed; 0 not held by this token (expired, or taken by another replica)
]]

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
