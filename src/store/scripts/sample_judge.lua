-- sample_judge.lua: judge LaunchDarkly's answer for one sampled member
-- against what the bridge recorded, and repair a mismatch (compare-and-set).
--
-- The member is judged only if its stored value is exactly the one
-- sample_pick.lua returned and it is not dirty: a push, a claim or an ack
-- between the read and LaunchDarkly's answer changes the value (a claim
-- marks it 'u'), and such a member is counted "changed", never repaired:
-- LaunchDarkly's answer may predate or postdate that change.
-- A mismatch ('i' recorded but LaunchDarkly does not include the key:
-- "missing"; 'o' recorded but included: "extra") is drift. It is repaired
-- as reconcile.lua repairs: the link state becomes unknown ('u'), the member
-- joins the dirty set and the link is due now; the flusher re-sends the
-- desired state under the normal rate limit.
--
-- KEYS[1] want hash   KEYS[2] cohort meta hash   KEYS[3] dirty set of the link
-- KEYS[4] due sorted set   KEYS[5] the link's sampling report hash
-- ARGV[1] destination name   ARGV[2] link id   ARGV[3] now (ms)
-- ARGV[4] member   ARGV[5] the stored value it was picked with
-- ARGV[6] '1' if LaunchDarkly includes the key, else '0'
-- Result: 'match', 'missing', 'extra' (both repaired) or 'changed'.
-- The report hash counts checked (judged), mismatched (= missing + extra),
-- missing, extra, repaired, changed, and holds last_ms.
local now = tonumber(ARGV[3])
local m = ARGV[4]
redis.call('HSET', KEYS[5], 'last_ms', now)
local cur = redis.call('HGET', KEYS[1], m)
local s = redis.call('HGET', KEYS[2], 'slot:' .. ARGV[1])
if (not s) or cur ~= ARGV[5] or redis.call('SISMEMBER', KEYS[3], m) == 1 then
  redis.call('HINCRBY', KEYS[5], 'changed', 1)
  return 'changed'
end
local slot = tonumber(s) + 1
local version, p, d, states = unpack_member(cur)
local st = state_at(states, slot)
redis.call('HINCRBY', KEYS[5], 'checked', 1)
if (st == 'i') == (ARGV[6] == '1') then return 'match' end
redis.call('HINCRBY', KEYS[5], 'mismatched', 1)
redis.call('HSET', KEYS[1], m, pack_member(version, p, d, set_state(states, slot, 'u')))
redis.call('SADD', KEYS[3], m)
redis.call('ZADD', KEYS[4], 'LT', now, ARGV[2])
redis.call('HINCRBY', KEYS[5], 'repaired', 1)
if st == 'i' then
  redis.call('HINCRBY', KEYS[5], 'missing', 1)
  return 'missing'
end
redis.call('HINCRBY', KEYS[5], 'extra', 1)
return 'extra'
