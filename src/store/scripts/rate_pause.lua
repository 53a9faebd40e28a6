-- rate_pause.lua: share a 429 pause with every replica; it only ever extends.
--
-- KEYS[1] the shared pause (ms until which every writer holds off)
-- ARGV[1] the new pause (ms, already clamped by the caller)
-- ARGV[2] when the key expires (ms, PXAT): a minute after the pause ends
-- Result: the pause now in force (decimal text).
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) and tonumber(cur) >= tonumber(ARGV[1]) then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return ARGV[1]
