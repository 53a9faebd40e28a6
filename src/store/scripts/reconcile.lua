-- reconcile.lua: compare one chunk of a link's members with LaunchDarkly's
-- export, staged in a set, and mark every difference for a rewrite.
--
-- The stage set holds the keys LaunchDarkly's export listed (the segment's
-- included contexts). Two modes, each called repeatedly until done so that
-- Redis is never blocked long:
--   'scan'  HSCAN a chunk of the want hash: each member is compared with
--           its presence in the stage set, then removed from the set.
--   'rest'  SPOP a chunk of what the set still holds: keys LaunchDarkly has
--           that the scan did not meet. A key the want hash holds (it
--           arrived during the scan) is compared as in 'scan'; a key it does
--           not hold is recorded as desired out (no pending change: no
--           source sent it) at the cohort's snapshot
--           floor (0 without one), so any real change of it wins, and sent.
-- A difference: desired in and absent ("missing"), or desired out and
-- present ("extra"). Unless the member is dead-lettered, its link state
-- becomes unknown ('u') and it joins the dirty set: the flusher re-sends its
-- desired state under the normal rate limit. Where the bridge had recorded
-- LaunchDarkly as agreeing with desired ('i' or 'o' equal to it), the
-- difference is drift: LaunchDarkly changed behind the bridge's back.
--
-- KEYS[1] want hash   KEYS[2] cohort meta hash   KEYS[3] dirty set of the link
-- KEYS[4] due sorted set   KEYS[5] stage set
-- ARGV[1] destination name   ARGV[2] link id   ARGV[3] now (ms)
-- ARGV[4] mode ('scan' or 'rest')   ARGV[5] HSCAN cursor ('scan' only)
-- ARGV[6] chunk size
-- Result: {next cursor ("0" when done), checked, missing, extra, repaired,
--          drift among missing, drift among extra}; {"-1", 0, 0, 0, 0, 0, 0}
--          if the cohort was never linked to the destination.
local meta = redis.call('HMGET', KEYS[2], 'slot:' .. ARGV[1], 'snapshot_floor')
if not meta[1] then return {'-1', 0, 0, 0, 0, 0, 0} end
local slot = tonumber(meta[1]) + 1
local floor = tonumber(meta[2] or '0') or 0
local checked, missing, extra, repaired, drift_in, drift_out = 0, 0, 0, 0, 0, 0

local function compare(m, value, present)
  checked = checked + 1
  local version, p, d, states = unpack_member(value)
  local s = state_at(states, slot)
  local differs = (d == '1' and not present) or (d == '0' and present)
  if not differs then return end
  local believed = s == (d == '1' and 'i' or 'o')
  if d == '1' then
    missing = missing + 1
    if believed then drift_in = drift_in + 1 end
  else
    extra = extra + 1
    if believed then drift_out = drift_out + 1 end
  end
  if s == 'd' then return end
  redis.call('HSET', KEYS[1], m, pack_member(version, p, d, set_state(states, slot, 'u')))
  redis.call('SADD', KEYS[3], m)
  repaired = repaired + 1
end

local next_cursor = '0'
if ARGV[4] == 'scan' then
  local res = redis.call('HSCAN', KEYS[1], ARGV[5], 'COUNT', tonumber(ARGV[6]))
  next_cursor = res[1]
  local entries = res[2]
  for i = 1, #entries, 2 do
    local m = entries[i]
    local present = redis.call('SREM', KEYS[5], m) == 1
    compare(m, entries[i + 1], present)
  end
else
  local popped = redis.call('SPOP', KEYS[5], tonumber(ARGV[6]))
  for _, m in ipairs(popped) do
    local value = redis.call('HGET', KEYS[1], m)
    if value then
      compare(m, value, true)
    else
      checked = checked + 1
      extra = extra + 1
      drift_out = drift_out + 1
      redis.call('HSET', KEYS[1], m, pack_member(floor, '0', '0', set_state('', slot, 'u')))
      redis.call('SADD', KEYS[3], m)
      repaired = repaired + 1
    end
  end
  if #popped > 0 then next_cursor = '1' end
end
if repaired > 0 then
  redis.call('ZADD', KEYS[4], 'LT', tonumber(ARGV[3]), ARGV[2])
end
return {next_cursor, checked, missing, extra, repaired, drift_in, drift_out}
