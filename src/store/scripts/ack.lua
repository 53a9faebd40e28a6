-- ack.lua: record what LaunchDarkly now has after an acknowledged (2xx) write.
--
-- Refuses to write under a lease the caller no longer holds (the fencing
-- check): the members then stay unknown and dirty and are sent again.
-- A member stays dirty if its desired state changed while the request flew.
--
-- KEYS[1] partition lease   KEYS[2] want hash   KEYS[3] dirty set of the link
-- KEYS[4] cohort meta hash  KEYS[5] due sorted set   KEYS[6] link meta hash
-- KEYS[7] dirty-since hash of the partition (dropped for the link once it is clean)
-- KEYS[8] fresh list of the link (not read here: ack_claim_head.lua hands
--         it to claim.lua); its count, the link meta's `fresh`, waits too
-- ARGV[1] lease token   ARGV[2] now (ms)   ARGV[3] destination name   ARGV[4] link id
-- ARGV[5] max delay (ms)   ARGV[6] batch size   ARGV[7] '1' if the claim was full
-- ARGV[8] when the claim was drawn (ms) if it took every member then dirty
--         (it was not full, and this is its whole batch), else -1
-- ARGV[9] k, then k active destination names (for "written" accounting)
-- ARGV[10+k..] pairs: member, sent desired ('1'/'0')
-- Result: {-1} lease not held; {written, still_dirty_in_link, accepted_since}
--   accepted_since: ms the link's oldest unacknowledged change was accepted
--   (read before this ack; -1 if unknown)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local now = tonumber(ARGV[2])
local slot = tonumber(redis.call('HGET', KEYS[4], 'slot:' .. ARGV[3]) or '0') + 1
local k = tonumber(ARGV[9])
local active = {}
for i = 1, k do
  local s = redis.call('HGET', KEYS[4], 'slot:' .. ARGV[9 + i])
  if s then active[#active + 1] = tonumber(s) + 1 end
end

-- Batched: one HMGET per CHUNK members, one HSET of every new value and one
-- SREM (a command per member made the ack of a 1,000-member batch cost
-- milliseconds, between two batches of a drain). A member listed twice sees
-- its first settlement, as one command per member would.
local CHUNK = 1000
local find, sub = string.find, string.sub
local written, sent_in, sent_out = 0, 0, 0
local fv, at, nw, clean_keys, nc = {}, {}, 0, {}, 0
local first = 10 + k
for s = first, #ARGV, 2 * CHUNK do
  local e = math.min(s + 2 * CHUNK - 1, #ARGV)
  local names = {}
  for j = s, e, 2 do names[#names + 1] = ARGV[j] end
  local vals = redis.call('HMGET', KEYS[2], unpack(names))
  for i, m in ipairs(names) do
    local sent = ARGV[s + 2 * i - 1]
    if sent == '1' then sent_in = sent_in + 1 else sent_out = sent_out + 1 end
    local p_at = at[m]
    local cur = p_at and fv[2 * p_at] or vals[i]
    if cur then
      -- unpack_member and pack_member inlined (a Lua call per member per
      -- helper was most of a 1,000-member ack's time): the version's text
      -- is kept as it is.
      local sep = find(cur, '!', 1, true)
      local p, d, states = sub(cur, sep + 1, sep + 1), sub(cur, sep + 2, sep + 2), sub(cur, sep + 3)
      local c = (sent == '1') and 'i' or 'o'
      if slot == 1 then
        states = c .. sub(states, 2)
      else
        states = set_state(states, slot, c)
      end
      if d == sent then
        nc = nc + 1
        clean_keys[nc] = m
      end
      if p == '1' then
        -- needs_write(state_at(states, sl), d) for each active slot, inlined.
        local clean, want = true, (d == '1') and 'i' or 'o'
        for a = 1, #active do
          local sl = active[a]
          local st = sub(states, sl, sl)
          if st == '' then st = 'o' end
          if st == 'u' or (st ~= 'd' and st ~= want) then clean = false break end
        end
        if clean then
          p = '0'
          written = written + 1
        end
      end
      if not p_at then
        nw = nw + 1
        p_at = nw
        at[m] = nw
        fv[2 * nw - 1] = m
      end
      fv[2 * p_at] = sub(cur, 1, sep) .. p .. d .. states
    end
  end
end
for s = 1, 2 * nw, 2 * CHUNK do
  redis.call('HSET', KEYS[2], unpack(fv, s, math.min(s + 2 * CHUNK - 1, 2 * nw)))
end
for s = 1, nc, CHUNK do
  redis.call('SREM', KEYS[3], unpack(clean_keys, s, math.min(s + CHUNK - 1, nc)))
end

-- One read of the link meta: its fresh count (members waiting in its fresh
-- list) and a rename flagged by a push during this flush (apply.lua), which
-- keeps the link due.
local lm = redis.call('HMGET', KEYS[6], 'fresh', 'rename_pending')
local remaining = redis.call('SCARD', KEYS[3]) + tonumber(lm[1] or '0')
local since = tonumber(redis.call('HGET', KEYS[7], ARGV[4]) or '-1')
local rename = lm[2] == '1'
if remaining == 0 then
  if rename then
    redis.call('ZADD', KEYS[5], 'LT', now, ARGV[4])
  else
    redis.call('ZREM', KEYS[5], ARGV[4])
  end
  redis.call('HDEL', KEYS[7], ARGV[4])
else
  local at = now + tonumber(ARGV[5])
  if ARGV[7] == '1' or remaining >= tonumber(ARGV[6]) then at = now end
  redis.call('ZADD', KEYS[5], 'LT', at, ARGV[4])
  -- The claim took every member dirty when it was drawn, so the members
  -- still dirty changed after it: the link's oldest unacknowledged change is
  -- no older than the claim. (Kept at the old time, the entry would never
  -- move while pushes keep coming during flushes, and the link would look
  -- ever more behind.)
  local claimed_at = tonumber(ARGV[8])
  if claimed_at >= 0 and since > 0 and since < claimed_at then
    redis.call('HSET', KEYS[7], ARGV[4], claimed_at)
  end
end
redis.call('HSET', KEYS[6], 'last_flush_ms', now, 'last_error', '', 'blocked', '', 'retry_at_ms', 0)
redis.call('HINCRBY', KEYS[6], 'requests', 1)
redis.call('HINCRBY', KEYS[6], 'sent_add', sent_in)
redis.call('HINCRBY', KEYS[6], 'sent_remove', sent_out)
return {written, remaining, since}
