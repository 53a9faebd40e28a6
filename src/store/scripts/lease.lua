-- lease.lua: renew or release a partition lease, only if the caller holds it.
--
-- KEYS[1] partition lease
-- ARGV[1] lease token   ARGV[2] TTL in ms to renew with, or 0 to release
-- Result: 1 if the caller held the lease (and it is now renewed or released), else 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
