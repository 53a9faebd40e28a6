-- claim.lua: hand up to N dirty members of one link to a LaunchDarkly request.
--
-- Every claimed member is marked unknown ('u') for the link *before* the
-- request is sent: a crash, timeout or reset leaves it unknown, so it stays
-- dirty and is sent again with its desired state (LaunchDarkly may have
-- applied the lost request). The link's due time becomes the hold time, so a
-- crashed flusher's work is picked up again once its lease is gone.
--
-- KEYS[1] partition lease   KEYS[2] dirty set of the link   KEYS[3] want hash
-- KEYS[4] cohort meta hash  KEYS[5] due sorted set
-- KEYS[6] link meta hash (its `fresh` count)   KEYS[7] fresh list of the link
-- ARGV[1] lease token       ARGV[2] max members           ARGV[3] destination name
-- ARGV[4] link id           ARGV[5] hold-until (ms)
-- ARGV[6] '1' for a shadow claim (shadow mode): the members are read, not
--         marked unknown, because no request will be sent, so nothing is in
--         doubt; ARGV[5] is then the link's next shadow pass.
-- ARGV[7] claim only if at least this many members are dirty ('0': any):
--         a draining link asks for its next full batch in the same round
--         trip as the last one's ack (flush/link.rs), and fewer waiting
--         leaves everything as it was
-- Fresh members (apply.lua's fresh list) join the dirty set here, whole
-- entries first in, while it holds fewer than N: those that still need a
-- write for the link (a later push may have taken one back). When the
-- dirty set was empty and they are all distinct, they are the batch
-- itself (no SRANDMEMBER, no second HMGET).
-- Result: {-1} lease not held; {0} nothing dirty (link removed from due);
--         {-2} fewer dirty than ARGV[7] (nothing done);
--         {1, member, desired, member, desired, ...}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local at_least = tonumber(ARGV[7] or '0')
local max = tonumber(ARGV[2])
local slot = redis.call('HGET', KEYS[4], 'slot:' .. ARGV[3])
local find, sub, min = string.find, string.sub, math.min
local CHUNK = 1000
local waiting = redis.call('SCARD', KEYS[2])
local members, known
if slot and waiting < max then
  local fresh = tonumber(redis.call('HGET', KEYS[6], 'fresh') or '0')
  if fresh > 0 then
    local s = tonumber(slot) + 1
    local keep, kv, nk, nc, empty = {}, {}, 0, 0, false
    -- Whole entries until a batch's worth is in hand (or the list is
    -- empty); again if none of them still needs a write.
    local want = max - waiting
    while nk == 0 and not empty do
      local cand, c = {}, 0
      while c < want do
        local e = redis.call('LPOP', KEYS[7])
        if not e then
          empty = true
          break
        end
        local pos = 1
        while true do
          local q = find(e, '\n', pos, true)
          c = c + 1
          if q then
            cand[c] = sub(e, pos, q - 1)
            pos = q + 1
          else
            cand[c] = sub(e, pos)
            break
          end
        end
      end
      nc = nc + c
      for a = 1, c, CHUNK do
        local b = min(a + CHUNK - 1, c)
        local got = redis.call('HMGET', KEYS[3], unpack(cand, a, b))
        for j = a, b do
          local cur = got[j - a + 1]
          if cur then
            local sep = find(cur, '!', 1, true)
            local st = sub(cur, sep + 2 + s, sep + 2 + s)
            if st == '' then st = 'o' end
            if needs_write(st, sub(cur, sep + 2, sep + 2)) then
              nk = nk + 1
              keep[nk], kv[nk] = cand[j], cur
            end
          end
        end
      end
    end
    local added = 0
    for a = 1, nk, CHUNK do
      added = added + redis.call('SADD', KEYS[2], unpack(keep, a, min(a + CHUNK - 1, nk)))
    end
    -- The count follows the list (set to 0 once it is empty, so it cannot drift).
    if empty or redis.call('LLEN', KEYS[7]) == 0 then
      redis.call('HSET', KEYS[6], 'fresh', 0)
    else
      redis.call('HINCRBY', KEYS[6], 'fresh', -nc)
    end
    if waiting == 0 and added == nk and nk <= max then
      members, known = keep, kv
    end
    waiting = waiting + added
  end
end
if at_least > 0 and waiting < at_least then return {-2} end
if not members then members = redis.call('SRANDMEMBER', KEYS[2], max) end
if (not slot) or #members == 0 then
  redis.call('ZREM', KEYS[5], ARGV[4])
  return {0}
end
slot = tonumber(slot) + 1
local shadow = ARGV[6] == '1'
-- Batched: one HMGET, one HSET of the members marked unknown, one SREM of
-- those that vanished (SRANDMEMBER's members are distinct).
-- The member helpers are inlined (a Lua call per member per helper was
-- most of a 1,000-member claim's time): the value keeps its version text,
-- only the link's state changes.
local out, fv, gone = {1}, {}, {}
local no, nf = 1, 0
for s = 1, #members, CHUNK do
  local e = min(s + CHUNK - 1, #members)
  local vals = known or redis.call('HMGET', KEYS[3], unpack(members, s, e))
  local off = known and 0 or s - 1
  for i = s, e do
    local m, cur = members[i], vals[i - off]
    if cur then
      local sep = find(cur, '!', 1, true)
      if not shadow then
        -- "<version>!<pending><desired>" then the states, slot set to 'u'.
        local states = sub(cur, sep + 3)
        if slot == 1 then
          states = 'u' .. sub(states, 2)
        else
          states = set_state(states, slot, 'u')
        end
        fv[nf + 1] = m
        fv[nf + 2] = sub(cur, 1, sep + 2) .. states
        nf = nf + 2
      end
      out[no + 1] = m
      out[no + 2] = sub(cur, sep + 2, sep + 2)
      no = no + 2
    else
      gone[#gone + 1] = m
    end
  end
end
for s = 1, #fv, 2 * CHUNK do
  redis.call('HSET', KEYS[3], unpack(fv, s, math.min(s + 2 * CHUNK - 1, #fv)))
end
for s = 1, #gone, CHUNK do
  redis.call('SREM', KEYS[2], unpack(gone, s, math.min(s + CHUNK - 1, #gone)))
end
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[4])
return out
