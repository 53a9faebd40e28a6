-- snapshot_page.lua: stages one page of a full snapshot, then falls through to
-- apply.lua: the two run as ONE script, so a page is staged and applied
-- atomically, and the session's last page records its pending finalization
-- in the same step (durable before the receiver answers).
--
-- It takes its own arguments off the END of KEYS and ARGV, so that apply.lua
-- (which follows) sees exactly its own layout:
-- KEYS[#-3] staging members set   KEYS[#-2] staging meta hash
-- KEYS[#-1] pending finalizations hash of the partition
-- KEYS[#]   the cohort's queue of completed sessions waiting to be finalized
-- ARGV[#-6] cohort ref "<source>:<cohort>"   ARGV[#-5] page   ARGV[#-4] total pages
-- ARGV[#-3] start version (ms; kept from the session's first page)
-- ARGV[#-2] staging TTL (ms)                  ARGV[#-1] session id
-- ARGV[#]   '1' to stage only if the cohort is armed (Heap drain), else '0'
-- Armed cohorts: the cohort meta hash (apply.lua's KEYS[2]) holds
-- snapshot_armed (when) and snapshot_session (the adopted session). A page 1
-- of a session adopts it; pages of other sessions are applied unstaged. The
-- arming ends when the adopted session has every page.
-- Staging meta fields: start, total, seen (distinct pages), page:<n>,
-- has_members ('1' once a member was staged), done ('1' once every page arrived).
-- A repeated page changes nothing here (page:<n> is set once); pages may
-- arrive in any order. When the last missing page arrives: done = 1, and the
-- pending finalization "<start>|0|<now>|<session>" is recorded (now is
-- apply.lua's ARGV[1]: when the entry was last worked on). Sessions overlap:
-- if another session of the cohort is being finalized, the completed one
-- waits in the cohort's queue (sorted set: session -> start) and is
-- finalized next (snapshot_finalize.lua); finalizations commute, so any
-- order gives last writer wins. The completing session's start also becomes
-- the cohort's snapshot floor, after apply.lua applied the page (apply.lua).
-- Result: apply.lua's.
local snap_armed_only = table.remove(ARGV) == '1'
local snap_session = table.remove(ARGV)
local snap_ttl = table.remove(ARGV)
local snap_start = table.remove(ARGV)
local snap_total = tonumber(table.remove(ARGV))
local snap_page = table.remove(ARGV)
local snap_ref = table.remove(ARGV)
local snap_queue = table.remove(KEYS)
local snap_pending = table.remove(KEYS)
local snap_meta = table.remove(KEYS)
local snap_members = table.remove(KEYS)

local stage = true
if snap_armed_only then
  if not redis.call('HGET', KEYS[2], 'snapshot_armed') then
    stage = false
  elseif redis.call('HGET', KEYS[2], 'snapshot_session') ~= snap_session then
    if snap_page == '1' then
      redis.call('HSET', KEYS[2], 'snapshot_session', snap_session)
    else
      stage = false
    end
  end
end

if stage and redis.call('HGET', snap_meta, 'done') ~= '1' then
  redis.call('HSETNX', snap_meta, 'start', snap_start)
  redis.call('HSET', snap_meta, 'total', snap_total)
  if redis.call('HSETNX', snap_meta, 'page:' .. snap_page, '1') == 1 then
    redis.call('HINCRBY', snap_meta, 'seen', 1)
  end
  local links = tonumber(ARGV[7])
  -- apply.lua's runs (after its history settings and delivery id):
  -- version, desired, count, then the keys; stage the adds, a thousand per call.
  local j = 10 + 2 * links
  while j <= #ARGV do
    local count = tonumber(ARGV[j + 2])
    if ARGV[j + 1] == '1' and count > 0 then
      for s = j + 3, j + 2 + count, 1000 do
        redis.call('SADD', snap_members, unpack(ARGV, s, math.min(s + 999, j + 2 + count)))
      end
      redis.call('HSET', snap_meta, 'has_members', '1')
    end
    j = j + 3 + count
  end
  if tonumber(redis.call('HGET', snap_meta, 'seen')) >= snap_total then
    redis.call('HSET', snap_meta, 'done', '1')
    local start = redis.call('HGET', snap_meta, 'start')
    local head = redis.call('HGET', snap_pending, snap_ref)
    if head then
      redis.call('ZADD', snap_queue, tonumber(start), snap_session)
    else
      redis.call('HSET', snap_pending, snap_ref, start .. '|0|' .. ARGV[1] .. '|' .. snap_session)
    end
    snapshot_floor_after = start
    if snap_armed_only then redis.call('HDEL', KEYS[2], 'snapshot_armed', 'snapshot_session') end
  end
  redis.call('PEXPIRE', snap_meta, snap_ttl)
  redis.call('PEXPIRE', snap_members, snap_ttl)
end

