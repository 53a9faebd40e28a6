-- apply.lua: fold one push of one cohort into Redis, atomically, in one round trip.
--
-- Member values in the want hash are "<version>|<pending><desired><states>":
--   version  the change's order (ms, integer text)
--   pending  '1' while this member's last change still awaits a LaunchDarkly write
--   desired  '1' in the segment, '0' out
--   states   one char per link slot, what that link's LaunchDarkly has:
--            'i' in, 'o' out, 'u' unknown (handed to a request with no answer yet),
--            'd' dead-lettered. Slots past the end read as 'o'.
-- A member is dirty for a link when its state there is 'u', or differs from desired.
--
-- KEYS[1]      want hash of the cohort
-- KEYS[2]      cohort meta hash (name, slot:<destination> -> slot index, slots)
-- KEYS[3]      due sorted set of the partition (link id -> ms when its flush is due)
-- KEYS[4]      cohort registry set of the partition
-- KEYS[5]      seen key of this delivery (only used when ARGV[2] > 0)
-- KEYS[6..5+n] dirty set of each link
-- ARGV[1] now (ms)         ARGV[2] seen TTL (ms; 0 = no delivery id)
-- ARGV[3] max delay (ms)   ARGV[4] batch size (max keys per request)
-- ARGV[5] cohort name ('' keeps the stored one)
-- ARGV[6] cohort ref "<source>:<cohort>"   ARGV[7] n, the number of links
-- ARGV[8..7+n] destination names   ARGV[8+n..7+2n] link ids
-- ARGV[8+2n..] triples: member key, version, desired ('1'/'0')
-- Result: {0, applied, stale, unchanged, superseded, cancelled}
--      or {1, "<summary of the first delivery>"} for a duplicate delivery.
local now = tonumber(ARGV[1])
local seen_ttl = tonumber(ARGV[2])
local max_delay = tonumber(ARGV[3])
local batch = tonumber(ARGV[4])
local n = tonumber(ARGV[7])

if seen_ttl > 0 then
  local prev = redis.call('GET', KEYS[5])
  if prev then return {1, prev} end
end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'name', ARGV[5]) end
redis.call('SADD', KEYS[4], ARGV[6])

-- Slots are assigned once per (cohort, destination) and never move, so a
-- config change that reorders destinations cannot misattribute states.
local slots = {}
local width = tonumber(redis.call('HGET', KEYS[2], 'slots') or '0')
for i = 1, n do
  local field = 'slot:' .. ARGV[7 + i]
  local s = redis.call('HGET', KEYS[2], field)
  if not s then
    s = width
    width = width + 1
    redis.call('HSET', KEYS[2], field, s, 'slots', width)
  end
  slots[i] = tonumber(s) + 1
end
local applied, stale, unchanged, superseded, cancelled = 0, 0, 0, 0, 0
local touched = {}
for j = 8 + 2 * n, #ARGV, 3 do
  local m, vtext, d = ARGV[j], ARGV[j + 1], ARGV[j + 2]
  local cur = redis.call('HGET', KEYS[1], m)
  local pending, states, fresh = '0', '', true
  if cur then
    local version, p, _, st = unpack_member(cur)
    if tonumber(vtext) < tonumber(version) then
      fresh = false
    else
      pending, states = p, st
    end
  end
  if fresh then
    applied = applied + 1
    local dirty = false
    for i = 1, n do
      if needs_write(state_at(states, slots[i]), d) then
        redis.call('SADD', KEYS[5 + i], m)
        dirty = true
        touched[i] = true
      else
        redis.call('SREM', KEYS[5 + i], m)
      end
    end
    if pending == '1' then superseded = superseded + 1 end
    if dirty then
      pending = '1'
    else
      if pending == '1' then cancelled = cancelled + 1 else unchanged = unchanged + 1 end
      pending = '0'
    end
    redis.call('HSET', KEYS[1], m, pack_member(vtext, pending, d, states))
  else
    stale = stale + 1
  end
end

-- A link is due max_delay after its first waiting change, or now once a full
-- batch waits. LT keeps an earlier due time (and lowers a claim's hold).
for i = 1, n do
  if touched[i] then
    local at = now + max_delay
    if redis.call('SCARD', KEYS[5 + i]) >= batch then at = now end
    redis.call('ZADD', KEYS[3], 'LT', at, ARGV[7 + n + i])
  end
end

if seen_ttl > 0 then
  local summary = applied .. ',' .. stale .. ',' .. unchanged .. ',' .. superseded .. ',' .. cancelled
  redis.call('SET', KEYS[5], summary, 'PX', seen_ttl)
end
return {0, applied, stale, unchanged, superseded, cancelled}
