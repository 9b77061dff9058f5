--[[
  lease_release-1: give the periodic-evaluation lease up, only if this replica holds it
  (compare-and-delete), so a replica that lost it never deletes its successor's.

  Input:
    KEYS[1] the lease (string: the holder's token)
    ARGV[1] this replica's token

  Output: 1 released; 0 not held by this token (nothing changed)
]]

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
