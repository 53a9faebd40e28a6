-- dead_letter.lua: set aside members LaunchDarkly rejected with 400, with its reason.
--
-- The member's state for the link becomes 'd': it leaves the dirty set and is
-- not sent again until an operator redrives it; nothing else of the link waits on it.
--
-- KEYS[1] partition lease   KEYS[2] want hash   KEYS[3] dirty set of the link
-- KEYS[4] cohort meta hash  KEYS[5] dead-letter hash of the link   KEYS[6] link meta hash
-- ARGV[1] lease token   ARGV[2] destination name   ARGV[3] now (ms)   ARGV[4] reason
-- ARGV[5..] members
-- Result: -1 lease not held; else how many pending changes ended dead-lettered.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local slot = tonumber(redis.call('HGET', KEYS[4], 'slot:' .. ARGV[2]) or '0') + 1
local dead = 0
for j = 5, #ARGV do
  local m = ARGV[j]
  local cur = redis.call('HGET', KEYS[2], m)
  if cur then
    local version, p, d, states = unpack_member(cur)
    if p == '1' then dead = dead + 1 end
    redis.call('HSET', KEYS[2], m, pack_member(version, '0', d, set_state(states, slot, 'd')))
  end
  redis.call('SREM', KEYS[3], m)
  redis.call('HSET', KEYS[5], m, ARGV[3] .. ' ' .. ARGV[4])
end
redis.call('HINCRBY', KEYS[6], 'dead_lettered', #ARGV - 4)
return dead
