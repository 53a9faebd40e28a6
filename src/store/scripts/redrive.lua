-- redrive.lua: give dead-lettered members of one link another chance.
--
-- Each named member that is in the link's dead letters leaves them and
-- becomes unknown ('u') for the link, so it is dirty and sent again with its
-- current desired state. Members not dead-lettered are left alone. Needs no
-- lease: like a push, it only makes work; the flusher does the writing.
--
-- KEYS[1] want hash   KEYS[2] cohort meta hash   KEYS[3] dirty set of the link
-- KEYS[4] dead-letter hash of the link   KEYS[5] due sorted set   KEYS[6] link meta hash
-- ARGV[1] destination name   ARGV[2] link id   ARGV[3] now (ms)
-- ARGV[4..] members
-- Result: how many members were redriven.
local slot = redis.call('HGET', KEYS[2], 'slot:' .. ARGV[1])
if not slot then return 0 end
slot = tonumber(slot) + 1
local redriven = 0
for j = 4, #ARGV do
  local m = ARGV[j]
  if redis.call('HDEL', KEYS[4], m) == 1 then
    local cur = redis.call('HGET', KEYS[1], m)
    if cur then
      local version, p, d, states = unpack_member(cur)
      redis.call('HSET', KEYS[1], m, pack_member(version, p, d, set_state(states, slot, 'u')))
      redis.call('SADD', KEYS[3], m)
      redriven = redriven + 1
    end
  end
end
if redriven > 0 then
  redis.call('ZADD', KEYS[5], 'LT', tonumber(ARGV[3]), ARGV[2])
  redis.call('HINCRBY', KEYS[6], 'redriven', redriven)
end
return redriven
