-- apply.lua: fold one push of one cohort into Redis, atomically, in one round trip.
--
-- Member values in the want hash are "<version>!<pending><desired><states>":
--   version  the change's order (ms, an integer in [0, 2^53), base 36: 8 characters)
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
-- KEYS[6+n]    dirty-since hash of the partition (link id -> ms its oldest
--              unacknowledged change was accepted; written only by the push
--              that makes the link wait, so the oldest stays)
-- KEYS[7+n..6+2n] link meta hash of each link (its `lifecycle` and `on_push`,
--              read here so a retired link costs a push no extra round trip;
--              `rename_pending` set when the cohort's name changes)
-- KEYS[7+2n]   history list of the cohort (newest first; see below)
-- KEYS[8+2n..7+3n] fresh list of each link (store/keys.rs `fresh`): the
--              members the want hash did not hold that this push makes
--              dirty go there as one entry, not into the dirty set one by
--              one (SADD of a never-seen member was a quarter of a first
--              sync's script); the link meta hash's `fresh` counts them and
--              claim.lua moves them into the dirty set
-- ARGV[1] now (ms)         ARGV[2] seen TTL (ms; 0 = no delivery id)
-- ARGV[3] due time of a link that gets its first waiting change (ms): now +
--         max delay, as text (a number computed here would be formatted by
--         Lua's sprintf on its way to ZADD: a measurable share of a small push)
-- ARGV[4] batch size (max keys per request)
-- ARGV[5] cohort name ('' keeps the stored one)
-- ARGV[6] cohort ref "<source>:<cohort>"   ARGV[7] n, the number of links
-- ARGV[8..7+n] destination names   ARGV[8+n..7+2n] link ids
-- ARGV[8+2n]   history "<records kept>,<keys per record>,<max age ms>" ("0,0,0": off)
-- ARGV[9+2n]   the history record's head, built by the caller ('' when
--              history is off): the JSON object's opening and every field
--              known before the push is applied, each followed by a comma
--              (d, r, k and i below); this script appends n and o
-- ARGV[10+2n..] runs of changes sharing a version and a direction: version
--              (ms, in base 36: as the want hash stores it, so no Lua
--              formats it), desired ('1'/'0'), count, then `count` member
--              keys (a push of one direction at one time, the usual case,
--              is one run)
-- History: one record per push (a duplicate too), never one write per
-- member: "<now ms> <json>", json {d: delivery id, r: runs [[version, desired]],
-- k: the first keys, i: each listed key's run (only with several runs), n:
-- [applied, stale, unchanged, superseded, cancelled] (dup: 1 for a
-- duplicate), o: one outcome char per listed key}. Outcomes: a accepted (to be
-- written), p accepted replacing a pending change (which is superseded),
-- c cancelled (undid a pending change: nothing to write), u unchanged
-- (LaunchDarkly already has it), s stale, d duplicate delivery. The listed
-- keys are the push's first ones, in order (ARGV order), so the caller lists
-- them; the outcomes are worked out here. The list is trimmed to its
-- length and records older than the max age are dropped from its tail,
-- every HIST_SLACK pushes (see record_history); the key expires after the
-- max age without pushes.
-- Result: {0, applied, stale, unchanged, superseded, cancelled, due_now (1 if a
--         link became due at once, 0 otherwise), refused, ignored}
--      or {1, "<summary of the first delivery>"} for a duplicate delivery
--      or {2, refused, ignored} when no link accepts the push (every link is
--         retired with on_push refuse or ignore): nothing is applied, the
--         delivery is not remembered as seen.
--      refused: {link id, its lifecycle state, ...}; ignored: {link id, ...}.
--
-- Retired links (store/lifecycle.rs): a link whose `lifecycle` is set and
-- whose `on_push` is `refuse` or `ignore` gets nothing from the push: its
-- dirty set and due time are untouched (ignored pushes are counted in its
-- `ignored_pushes`). The cohort's other links get the push as usual; the
-- want hash (desired states) is shared by the cohort's links, so it follows
-- the push whenever at least one link accepts it.
local now = tonumber(ARGV[1])
local seen_ttl = tonumber(ARGV[2])
local due_later = ARGV[3]
local batch = tonumber(ARGV[4])
local n = tonumber(ARGV[7])
local first = 10 + 2 * n

-- The runs: {first key index, last key index, version (number), desired}.
local runs = {}
do
  local j = first
  while j <= #ARGV do
    local count = tonumber(ARGV[j + 2])
    local v = tonumber(ARGV[j], 36)
    if not (v and v >= 0 and v == math.floor(v) and v < 9007199254740992) then
      error('member version out of range: ' .. tostring(ARGV[j]))
    end
    runs[#runs + 1] = {j + 3, j + 2 + count, v, ARGV[j + 1], ARGV[j]}
    j = j + 3 + count
  end
end

-- The history's settings, and the keys listed so far with their outcome.
-- A count as text: Lua formats a number with sprintf, a measurable share of
-- a small push, and a small push's counts are nearly all 0 or 1.
local function count_text(x)
  if x == 0 then return '0' elseif x == 1 then return '1' end
  return tostring(x)
end

-- The history's settings (the age also as text, for PEXPIRE), and the
-- outcome of each key listed so far.
local hist_cap, hist_keys, hist_age, hist_age_text
do
  local a, b, c = string.match(ARGV[8 + 2 * n], '^(%d+),(%d+),(%d+)$')
  hist_cap, hist_keys, hist_age = tonumber(a or '0'), tonumber(b or '0'), tonumber(c or '0')
  hist_age_text = c
end
if hist_cap == 0 then hist_keys = 0 end
local hn, ho = 0, {}

-- Appends this push's record to the cohort's history (one LPUSH, no
-- per-member write): the caller's head, then the counts and outcomes.
-- The list is trimmed every HIST_SLACK pushes, not on each one (two calls
-- fewer per push, a tenth of a one-member push's script): to its cap once
-- it holds HIST_SLACK records more, and by age whenever its length is a
-- multiple of HIST_SLACK. It may so hold up to HIST_SLACK - 1 records past
-- its cap or its age; the reader (store/history.rs) reads only the first
-- `cap` records and skips those past the age.
local HIST_SLACK = 16
local function record_history(nums)
  if hist_cap == 0 then return end
  local key = KEYS[7 + 2 * n]
  local len = redis.call('LPUSH', key, ARGV[1] .. ' ' .. ARGV[9 + 2 * n] .. '"n":['
    .. count_text(nums[1]) .. ',' .. count_text(nums[2]) .. ',' .. count_text(nums[3]) .. ','
    .. count_text(nums[4]) .. ',' .. count_text(nums[5]) .. ',' .. count_text(nums[6]) .. '],"o":"' .. table.concat(ho) .. '"}')
  if len >= hist_cap + HIST_SLACK or len % HIST_SLACK == 0 then
    if len > hist_cap then
      redis.call('RPOP', key, len - hist_cap)
      len = hist_cap
    end
    -- At most HIST_SLACK records aged past since the last trim.
    for _ = 1, math.min(len, HIST_SLACK) do
      local tail = redis.call('LINDEX', key, -1)
      if not tail then break end
      local at = tonumber(string.match(tail, '^(%d+) ') or '0')
      if at >= now - hist_age then break end
      redis.call('RPOP', key)
    end
  end
  redis.call('PEXPIRE', key, hist_age_text)
end

if seen_ttl > 0 then
  local prev = redis.call('GET', KEYS[5])
  if prev then
    local total = 0
    for _, run in ipairs(runs) do total = total + run[2] - run[1] + 1 end
    ho[1] = string.rep('d', math.min(hist_keys, total))
    record_history({0, 0, 0, 0, 0, 1})
    return {1, prev}
  end
end
-- Each link's lifecycle: `live` lists the links that take the push.
-- The same read gives each link's fresh count (fresh_before).
local live, refused, ignored, fresh_before = {}, {}, {}, {}
for i = 1, n do
  local lc = redis.call('HMGET', KEYS[6 + n + i], 'lifecycle', 'on_push', 'fresh')
  fresh_before[i] = tonumber(lc[3] or '0')
  local mode = 'accept'
  if lc[1] and lc[1] ~= '' then
    mode = (lc[2] == 'accept' or lc[2] == 'ignore') and lc[2] or 'refuse'
  end
  if mode == 'refuse' then
    refused[#refused + 1] = ARGV[7 + n + i]
    refused[#refused + 1] = lc[1]
  elseif mode == 'ignore' then
    ignored[#ignored + 1] = ARGV[7 + n + i]
    redis.call('HINCRBY', KEYS[6 + n + i], 'ignored_pushes', 1)
  else
    live[#live + 1] = i
  end
end
if #live == 0 and n > 0 then
  return {2, refused, ignored}
end
-- One read of the cohort meta: its name, slot count and each link's slot.
local fields = {'name', 'slots'}
for i = 1, n do fields[2 + i] = 'slot:' .. ARGV[7 + i] end
fields[#fields + 1] = 'snapshot_floor'
local meta = redis.call('HMGET', KEYS[2], unpack(fields))
-- The cohort's snapshot floor: the newest completed full snapshot's start
-- version. A member the want hash does not hold was in none of that
-- snapshot's pages (they were applied, as in, when they arrived) or left
-- later and was swept: a change not newer than the floor (THE TIE RULE: the
-- snapshot's implicit "out" wins a tie) loses to the snapshot.
local floor = tonumber(meta[3 + n] or '')
if ARGV[5] ~= '' and meta[1] ~= ARGV[5] then
  redis.call('HSET', KEYS[2], 'name', ARGV[5])
  -- A renamed cohort (it had a name before): each live link's segment name
  -- follows, sent once by the flusher (flush/link.rs, `rename`) however many
  -- pushes repeat the new name. The flag lives in Redis, so it survives a
  -- restart; the link is due now so a push that changes nothing else still
  -- sends it. A link not yet created gets the new name at creation.
  if meta[1] then
    for _, i in ipairs(live) do
      redis.call('HSET', KEYS[6 + n + i], 'rename_pending', '1')
      redis.call('ZADD', KEYS[3], 'LT', ARGV[1], ARGV[7 + n + i])
    end
  end
end

-- Slots are assigned once per (cohort, destination) and never move, so a
-- config change that reorders destinations cannot misattribute states. A
-- cohort joins the partition's registry when it gets its first slot.
local slots, assigned = {}, {}
local width = tonumber(meta[2] or '0')
for i = 1, n do
  local s = meta[2 + i]
  if not s then
    s = width
    width = width + 1
    assigned[#assigned + 1] = fields[2 + i]
    assigned[#assigned + 1] = s
  end
  slots[i] = tonumber(s) + 1
end
if #assigned > 0 then
  assigned[#assigned + 1] = 'slots'
  assigned[#assigned + 1] = width
  redis.call('HSET', KEYS[2], unpack(assigned))
  redis.call('SADD', KEYS[4], ARGV[6])
end
local applied, stale = 0, 0
local counts = {superseded = 0, cancelled = 0, unchanged = 0}
local touched = {}
-- Redis commands are batched (one HMGET per CHUNK members, one HSET with
-- every written field/value, one SADD and one SREM per link) rather than
-- issued per member: a 1,000-member push costs a handful of calls instead of
-- three thousand.
-- The members written, in first-write order: fv[2p - 1] is the p-th one and
-- fv[2p] its value as this push leaves it (HSET's arguments, as they are),
-- at[m] = p, and dec[i][p] link i's decision for it (true: SADD, false:
-- SREM; the last one wins), or newdec[p] for a member written only as
-- never seen (the same decision for every link). A member listed twice sees
-- its first change there, exactly as one command per member would.
local CHUNK = 1000 -- well under Lua's unpack limit (LUAI_MAXCSTACK, 8000)
local fv, at, nw = {}, {}, 0
local dec, newdec, any_new_dirty = {}, {}, false
for _, i in ipairs(live) do dec[i] = {} end
-- The hot loop: the member helpers of member.lua are inlined here (a Lua
-- function call per member per helper is a measurable share of a big push).
local sub, find, min = string.sub, string.find, math.min
for _, run in ipairs(runs) do
  local vnum, d = run[3], run[4]
  local packed_version = run[5] .. '!'
  local want_state = (d == '1') and 'i' or 'o'
  -- A member the want hash does not hold (never seen, or swept) has no link
  -- states (each slot reads 'o'): its value and every link's decision are
  -- the same for each such member of the run, worked out once here. It is
  -- dirty wherever it is wanted in; newer than a snapshot floor, or stale.
  local new_dirty = (d == '1')
  local new_value = packed_version .. (new_dirty and '1' or '0') .. d
  local new_fresh = not (floor and vnum <= floor)
  for s = run[1], run[2], CHUNK do
    local e = min(s + CHUNK - 1, run[2])
    local vals = redis.call('HMGET', KEYS[1], unpack(ARGV, s, e))
    for k = s, e do
      local m = ARGV[k]
      local p = at[m]
      local v
      if p then v = fv[2 * p] else v = vals[k - s + 1] end
      if not v and new_fresh and not p then
        -- The first-sync case: a member never seen.
        applied = applied + 1
        nw = nw + 1
        fv[2 * nw - 1], fv[2 * nw] = m, new_value
        at[m] = nw
        newdec[nw] = new_dirty
        if new_dirty then
          any_new_dirty = true
        else
          counts.unchanged = counts.unchanged + 1
        end
        if hn < hist_keys then
          hn = hn + 1
          ho[hn] = new_dirty and 'a' or 'u'
        end
      else
        local pending, states, fresh = '0', '', true
        if v then
          local sep = find(v, '!', 1, true)
          -- loses_to (member.lua), inlined: older, or an "in" tying an "out".
          local sv = tonumber(sub(v, 1, sep - 1), 36)
          if vnum < sv or (vnum == sv and d == '1' and sub(v, sep + 2, sep + 2) == '0') then
            fresh = false
          else
            pending, states = sub(v, sep + 1, sep + 1), sub(v, sep + 3)
          end
        elseif not new_fresh then
          fresh = false
        end
        if fresh then
          applied = applied + 1
          if not p then
            nw = nw + 1
            p = nw
            fv[2 * p - 1] = m
            at[m] = p
          end
          local dirty = false
          for _, i in ipairs(live) do
            local slot = slots[i]
            local st = sub(states, slot, slot)
            -- needs_write: unknown always, dead-lettered never, else differs.
            if st == 'u' or (st ~= 'd' and st ~= want_state and not (st == '' and want_state == 'o')) then
              dec[i][p] = true
              dirty = true
              touched[i] = true
            else
              dec[i][p] = false
            end
          end
          fv[2 * p] = packed_version .. settle(counts, pending, dirty) .. d .. states
          if hn < hist_keys then
            hn = hn + 1
            if dirty then
              ho[hn] = (pending == '1') and 'p' or 'a'
            else
              ho[hn] = (pending == '1') and 'c' or 'u'
            end
          end
        else
          stale = stale + 1
          if hn < hist_keys then
            hn = hn + 1
            ho[hn] = 's'
          end
        end
      end
    end
  end
end

-- Calls `cmd` on `key` with the first `len` items of `list`, 2 * CHUNK
-- items per call (CHUNK field/value pairs for HSET); returns the sum of
-- the replies (SADD: how many were added).
local function flush_list(cmd, key, list, len)
  local sum = 0
  for s = 1, len, 2 * CHUNK do
    sum = sum + redis.call(cmd, key, unpack(list, s, min(s + 2 * CHUNK - 1, len)))
  end
  return sum
end
flush_list('HSET', KEYS[1], fv, 2 * nw)
-- A push with fewer fresh members than this adds them to the dirty set:
-- RPUSH and HINCRBY cost more than a few SADDs, and small pushes keep the
-- dirty set alone.
local FRESH_MIN = 64
-- added[i]: members this push made wait for link i (SADD's count, and the
-- fresh ones); fresh_total[i]: the link's fresh count after it.
local added, fresh_total = {}, {}
for _, i in ipairs(live) do
  local add, rem, fr, na, nr, nf = {}, {}, {}, 0, 0, 0
  local di = dec[i]
  if any_new_dirty then touched[i] = true end
  for p = 1, nw do
    local x = di[p]
    if x == nil then
      -- Never seen: dirty (a fresh member) when wanted in, else nothing to
      -- take back (it was in no dirty set).
      if newdec[p] then
        nf = nf + 1
        fr[nf] = fv[2 * p - 1]
      end
    elseif x then
      na = na + 1
      add[na] = fv[2 * p - 1]
    else
      nr = nr + 1
      rem[nr] = fv[2 * p - 1]
    end
  end
  added[i] = flush_list('SADD', KEYS[5 + i], add, na)
  flush_list('SREM', KEYS[5 + i], rem, nr)
  fresh_total[i] = fresh_before[i]
  if nf >= FRESH_MIN then
    redis.call('RPUSH', KEYS[7 + 2 * n + i], table.concat(fr, '\n'))
    fresh_total[i] = redis.call('HINCRBY', KEYS[6 + n + i], 'fresh', nf)
  else
    nf = flush_list('SADD', KEYS[5 + i], fr, nf)
  end
  added[i] = added[i] + nf
end

-- A link is due max_delay after its first waiting change, or now once a full
-- batch waits. LT keeps an earlier due time (and lowers a claim's hold).
local due_now = 0
for _, i in ipairs(live) do
  if touched[i] then
    local due_at = due_later
    local waiting = redis.call('SCARD', KEYS[5 + i]) + fresh_total[i]
    if waiting >= batch then
      due_at = ARGV[1]
      due_now = 1
    end
    redis.call('ZADD', KEYS[3], 'LT', due_at, ARGV[7 + n + i])
    -- The link's oldest waiting change: now, when every member waiting
    -- came with this push (HSET: an entry left by members that flipped
    -- back since is not theirs). When others waited before it, the entry
    -- is theirs (apply or ack wrote it; links made dirty by a resync,
    -- redrive or snapshot get it from dirty_since.lua), and one call is saved.
    if waiting > 0 and waiting <= added[i] then
      redis.call('HSET', KEYS[6 + n], ARGV[7 + n + i], ARGV[1])
    end
  end
end

if snapshot_floor_after and (not floor or tonumber(snapshot_floor_after) > floor) then
  redis.call('HSET', KEYS[2], 'snapshot_floor', snapshot_floor_after)
end
record_history({applied, stale, counts.unchanged, counts.superseded, counts.cancelled, 0})
if seen_ttl > 0 then
  local summary = count_text(applied) .. ',' .. count_text(stale) .. ',' .. count_text(counts.unchanged)
    .. ',' .. count_text(counts.superseded) .. ',' .. count_text(counts.cancelled)
  redis.call('SET', KEYS[5], summary, 'PX', seen_ttl)
end
return {0, applied, stale, counts.unchanged, counts.superseded, counts.cancelled, due_now,
  refused, ignored}
