-- sample_pick.lua: pick a random member of a link whose LaunchDarkly state
-- the bridge has settled, for sampled verification (reconcile::sample).
--
-- HRANDFIELD draws ARGV[2] members of the cohort's want hash, each
-- independently and equally likely (a negative count: with a positive one,
-- a hash no bigger than the count comes back whole in its internal order,
-- and the same first member would be checked every time); the first whose state in
-- the link's slot is settled ('i' in, 'o' out) and that is not in the link's
-- dirty set is returned with its whole stored value, so the judging script
-- can tell later whether anything touched it meanwhile. Members in doubt
-- ('u'), dead-lettered ('d') or dirty are skipped: the flusher writes them
-- anyway, and a read-back of them proves nothing. Read-only.
--
-- KEYS[1] want hash   KEYS[2] cohort meta hash   KEYS[3] dirty set of the link
-- ARGV[1] destination name   ARGV[2] how many members to draw
-- Result: {member, stored value, state ('i' or 'o')}, or {} when the cohort
--         was never linked to the destination or no drawn member qualifies.
local s = redis.call('HGET', KEYS[2], 'slot:' .. ARGV[1])
if not s then return {} end
local slot = tonumber(s) + 1
local drawn = redis.call('HRANDFIELD', KEYS[1], -tonumber(ARGV[2]), 'WITHVALUES')
for i = 1, #drawn, 2 do
  local m, v = drawn[i], drawn[i + 1]
  local _, _, _, states = unpack_member(v)
  local st = state_at(states, slot)
  if (st == 'i' or st == 'o') and redis.call('SISMEMBER', KEYS[3], m) == 0 then
    return {m, v, st}
  end
end
return {}
