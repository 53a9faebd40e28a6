-- dirty_since.lua: keep a partition's dirty-since hash true, and return its
-- oldest entry. Links made dirty by a script that does not record the time
-- (redrive, resync, snapshot finalization) get `now`; links whose dirty set
-- emptied without an ack (flip-backs, dead letters, vanished members) lose
-- their entry.
--
-- KEYS[1] dirty-since hash of the partition
-- KEYS[2..1+2n] per link: its dirty set, then its meta hash (the `fresh`
--         count of members waiting in its fresh list, apply.lua)
-- ARGV[1] now (ms)   ARGV[2..1+n] link ids (the due set's and the hash's)
-- Result: ms of the oldest unacknowledged change of the partition, or -1
local now = tonumber(ARGV[1])
local oldest = -1
for i = 2, #ARGV do
  local link = ARGV[i]
  local j = 2 * (i - 1)
  if redis.call('SCARD', KEYS[j]) == 0
    and tonumber(redis.call('HGET', KEYS[j + 1], 'fresh') or '0') == 0 then
    redis.call('HDEL', KEYS[1], link)
  else
    redis.call('HSETNX', KEYS[1], link, now)
    local since = tonumber(redis.call('HGET', KEYS[1], link))
    if oldest < 0 or since < oldest then oldest = since end
  end
end
return oldest
