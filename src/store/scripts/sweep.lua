-- sweep.lua: remove tombstones past retention from one cohort, a chunk at a time.
--
-- A tombstone is a member that is desired out, has no pending change, and
-- whose every link state is settled out ('o'); it is kept so that a late,
-- older event is recognised as stale, until its version is older than the cutoff.
-- Chunks keep every call short, so Redis is never blocked for long.
--
-- KEYS[1] want hash   KEYS[2] partition lease
-- ARGV[1] HSCAN cursor   ARGV[2] chunk size   ARGV[3] cutoff version (ms)   ARGV[4] lease token
-- Result: {next cursor ("0" when done), removed}; {"-1", 0} if the lease is not held.
if redis.call('GET', KEYS[2]) ~= ARGV[4] then return {'-1', 0} end
local res = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local entries = res[2]
local cutoff = tonumber(ARGV[3])
local removed = 0
for i = 1, #entries, 2 do
  local m = entries[i]
  local version, p, d, states = unpack_member(entries[i + 1])
  if p == '0' and d == '0' and not string.find(states, '[^o]') and tonumber(version) < cutoff then
    redis.call('HDEL', KEYS[1], m)
    removed = removed + 1
  end
end
return {res[1], removed}
