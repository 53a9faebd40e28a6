-- resync.lua: mark one chunk of a cohort's members for a full rewrite of one link.
--
-- Every member the bridge tracks for the cohort (desired in, and tombstones
-- desired out) becomes unknown ('u') for the link, so it is dirty and sent
-- again with its desired state: LaunchDarkly ends equal to the bridge's view,
-- whatever drift it had. Dead-lettered members stay put (redrive them).
-- Called repeatedly with the returned cursor, so Redis is never blocked long.
--
-- KEYS[1] want hash   KEYS[2] cohort meta hash   KEYS[3] dirty set of the link
-- KEYS[4] due sorted set   KEYS[5] link meta hash
-- ARGV[1] destination name   ARGV[2] link id   ARGV[3] now (ms)
-- ARGV[4] HSCAN cursor   ARGV[5] chunk size
-- Result: {next cursor ("0" when done), members marked}; {"-1", 0} if the
--         cohort has never been linked to the destination.
local slot = redis.call('HGET', KEYS[2], 'slot:' .. ARGV[1])
if not slot then return {'-1', 0} end
slot = tonumber(slot) + 1
local res = redis.call('HSCAN', KEYS[1], ARGV[4], 'COUNT', tonumber(ARGV[5]))
local entries = res[2]
local marked = 0
for i = 1, #entries, 2 do
  local m = entries[i]
  local version, p, d, states = unpack_member(entries[i + 1])
  if state_at(states, slot) ~= 'd' then
    redis.call('HSET', KEYS[1], m, pack_member(version, p, d, set_state(states, slot, 'u')))
    redis.call('SADD', KEYS[3], m)
    marked = marked + 1
  end
end
if marked > 0 then
  redis.call('ZADD', KEYS[4], 'LT', tonumber(ARGV[3]), ARGV[2])
end
if res[1] == '0' then
  redis.call('HSET', KEYS[5], 'last_resync_ms', ARGV[3])
  redis.call('HINCRBY', KEYS[5], 'resyncs', 1)
end
return {res[1], marked}
