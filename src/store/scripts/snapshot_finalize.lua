-- snapshot_finalize.lua: one chunk of a full snapshot's finalization.
--
-- Members of the cohort that are desired in, were in no page of the snapshot
-- (not in the staging set) and whose version is not newer than the snapshot's
-- start become desired out at the start version: a normal change (dirty sets,
-- due index, outcomes), exactly as apply.lua would fold it (THE TIE RULE:
-- the snapshot's "out" wins against an "in" of equal version). Members
-- already out and in no page get the start version too (a tombstone), so a
-- late, older "in" is stale. When a session's finalization ends (or is
-- abandoned), the next completed session of the cohort, if any, is taken
-- from the queue and status 2 tells the caller to go on with it. The HSCAN cursor
-- lives in the pending entry ("<start>|<cursor>|<last worked ms>|<session>"),
-- so any caller (the receiver that applied the last page, or a flusher
-- resuming after a crash) continues where the last chunk stopped; a chunk
-- applied twice changes nothing the second time. A flusher only takes over an
-- entry nobody has worked on for ARGV[8] ms, so the receiver's answer counts
-- every removal in the normal case.
--
-- KEYS[1] pending finalizations hash   KEYS[2] want hash
-- KEYS[3] staging members set          KEYS[4] staging meta hash
-- KEYS[5] cohort meta hash             KEYS[6] due sorted set of the partition
-- KEYS[7] the cohort's queue of completed sessions (session -> start)
-- KEYS[8..7+n] dirty set of each link
-- ARGV[1] cohort ref "<source>:<cohort>"   ARGV[2] session the caller read from the entry
-- ARGV[3] chunk size (HSCAN COUNT)   ARGV[4] now (ms)   ARGV[5] max delay (ms)
-- ARGV[6] batch size   ARGV[7] staging TTL (ms)
-- ARGV[8] minimum idle time (ms) of the entry before this caller takes it over (0: always)
-- ARGV[9] n, the number of links
-- ARGV[10..9+n] destination names   ARGV[10+n..9+2n] link ids
-- Result: {status, removed, superseded, cancelled, unchanged}; status
--   0 finished (entry and staging set removed) or no entry,
--   1 more chunks to go,
--   2 the entry belongs to another session now (re-read it and go on),
--   3 abandoned: the staging expired before the end (entry removed, nothing changed),
--     (0 and 3 become 2 when a queued session takes the entry over)
--   4 someone worked on the entry less than ARGV[8] ms ago: left to them.
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return {0, 0, 0, 0, 0} end
local bar1 = string.find(entry, '|', 1, true)
local bar2 = string.find(entry, '|', bar1 + 1, true)
local bar3 = string.find(entry, '|', bar2 + 1, true)
local start_text = string.sub(entry, 1, bar1 - 1)
local cursor = string.sub(entry, bar1 + 1, bar2 - 1)
local worked = tonumber(string.sub(entry, bar2 + 1, bar3 - 1))
local session = string.sub(entry, bar3 + 1)
if session ~= ARGV[2] then return {2, 0, 0, 0, 0} end
if tonumber(ARGV[4]) - worked < tonumber(ARGV[8]) then return {4, 0, 0, 0, 0} end
-- Ends the head entry; a queued session takes its place. Returns the status:
-- 2 (go on with the next session) or 0 (none left).
local function next_session()
  local nxt = redis.call('ZPOPMIN', KEYS[7])
  if #nxt == 0 then
    redis.call('HDEL', KEYS[1], ARGV[1])
    return 0
  end
  redis.call('HSET', KEYS[1], ARGV[1], nxt[2] .. '|0|' .. ARGV[4] .. '|' .. nxt[1])
  return 2
end
if redis.call('EXISTS', KEYS[4]) == 0
   or (redis.call('HGET', KEYS[4], 'has_members') == '1' and redis.call('EXISTS', KEYS[3]) == 0) then
  local st = next_session()
  if st == 0 then st = 3 end
  return {st, 0, 0, 0, 0}
end

local start = tonumber(start_text)
local now = tonumber(ARGV[4])
local max_delay = tonumber(ARGV[5])
local batch = tonumber(ARGV[6])
local n = tonumber(ARGV[9])
local slots = {}
local width = tonumber(redis.call('HGET', KEYS[5], 'slots') or '0')
for i = 1, n do
  local field = 'slot:' .. ARGV[9 + i]
  local s = redis.call('HGET', KEYS[5], field)
  if not s then
    s = width
    width = width + 1
    redis.call('HSET', KEYS[5], field, s, 'slots', width)
  end
  slots[i] = tonumber(s) + 1
end

local res = redis.call('HSCAN', KEYS[2], cursor, 'COUNT', tonumber(ARGV[3]))
local entries = res[2]
local removed = 0
local counts = {superseded = 0, cancelled = 0, unchanged = 0}
local touched = {}
for e = 1, #entries, 2 do
  local m = entries[e]
  local version, pending, d, states = unpack_member(entries[e + 1])
  if tonumber(version) > start or redis.call('SISMEMBER', KEYS[3], m) == 1 then
    -- newer than the snapshot, or in one of its pages: untouched
  elseif d == '0' then
    if tonumber(version) < start then
      redis.call('HSET', KEYS[2], m, pack_member(start_text, pending, '0', states))
    end
  else
    removed = removed + 1
    local dirty = false
    for i = 1, n do
      if needs_write(state_at(states, slots[i]), '0') then
        redis.call('SADD', KEYS[7 + i], m)
        dirty = true
        touched[i] = true
      else
        redis.call('SREM', KEYS[7 + i], m)
      end
    end
    pending = settle(counts, pending, dirty)
    redis.call('HSET', KEYS[2], m, pack_member(start_text, pending, '0', states))
  end
end
for i = 1, n do
  if touched[i] then
    local at = now + max_delay
    if redis.call('SCARD', KEYS[7 + i]) >= batch then at = now end
    redis.call('ZADD', KEYS[6], 'LT', at, ARGV[9 + n + i])
  end
end

if res[1] == '0' then
  -- UNLINK: the staging set can hold a whole cohort; free it off the main thread.
  redis.call('UNLINK', KEYS[3])
  return {next_session(), removed, counts.superseded, counts.cancelled, counts.unchanged}
end
redis.call('HSET', KEYS[1], ARGV[1], start_text .. '|' .. res[1] .. '|' .. ARGV[4] .. '|' .. session)
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[7]))
redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[7]))
return {1, removed, counts.superseded, counts.cancelled, counts.unchanged}
