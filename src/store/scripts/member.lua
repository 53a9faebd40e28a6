-- member.lua: helpers for a member's value in a cohort's want hash,
-- "<version>!<pending><desired><states>" (the format is described in apply.lua).
-- Prepended to every script that reads or writes members; defines no keys.

local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'

-- THE TIE RULE (see src/store/mod.rs): of two changes to one member with
-- equal versions, "out" wins; two changes of one direction are the same change.
-- Whether a change (version `v`, desired `d`) loses against a stored member
-- (version `sv`, desired `sd`): older, or equal and an "in" against an "out".
local function loses_to(v, d, sv, sd)
  return v < sv or (v == sv and d == '1' and sd == '0')
end

-- Set by snapshot_page.lua when its page completes a session: the session's
-- start version, recorded as the cohort's snapshot floor once apply.lua has
-- applied the page (see apply.lua).
local snapshot_floor_after = nil

local b36_memo = {}

-- A non-negative integer in base 36 (8 characters for ms versions until
-- 2059). Memoized: the members of one push usually share one version.
local function to_b36(n)
  local memo = b36_memo[n]
  if memo then return memo end
  local s, m = '', n
  repeat
    local r = m % 36
    s = string.sub(B36, r + 1, r + 1) .. s
    m = (m - r) / 36
  until m == 0
  b36_memo[n] = s
  return s
end

-- Splits a member value into version (a number), pending, desired and link states.
local function unpack_member(v)
  local sep = string.find(v, '!', 1, true)
  return tonumber(string.sub(v, 1, sep - 1), 36), string.sub(v, sep + 1, sep + 1),
         string.sub(v, sep + 2, sep + 2), string.sub(v, sep + 3)
end

-- Packs a member value; `version` is a number (or its decimal text), an
-- integer in [0, 2^53): the receivers refuse any other version. Base 36 keeps
-- a one-link value at 12 bytes, inside Redis's 16-byte allocation class.
local function pack_member(version, pending, desired, states)
  local n = tonumber(version)
  if not (n and n >= 0 and n == math.floor(n) and n < 9007199254740992) then
    error('member version out of range: ' .. tostring(version))
  end
  return to_b36(n) .. '!' .. pending .. desired .. states
end

-- The state of 1-based slot `slot`; slots past the end read as 'o' (never sent).
local function state_at(states, slot)
  local c = string.sub(states, slot, slot)
  if c == '' then return 'o' end
  return c
end

-- `states` with slot `slot` set to `c`, padding slots in between with 'o'.
local function set_state(states, slot, c)
  if #states < slot then states = states .. string.rep('o', slot - #states) end
  return string.sub(states, 1, slot - 1) .. c .. string.sub(states, slot + 1)
end

-- Whether a member whose desired state is `d` still needs a write for a link in state `s`.
local function needs_write(s, d)
  if s == 'u' then return true end
  if s == 'd' then return false end
  return s ~= ((d == '1') and 'i' or 'o')
end

-- An accepted change's pending flag and outcome: `pending` is the member's
-- flag before the change, `dirty` whether any link still needs a write for
-- it. An earlier pending change it replaces counts as superseded; a change
-- that needs no write counts as cancelled (it undid a pending change, a flip
-- back) or unchanged (LaunchDarkly already has it). Adds to `counts`
-- (superseded, cancelled, unchanged) and returns the new pending flag.
local function settle(counts, pending, dirty)
  if pending == '1' then counts.superseded = counts.superseded + 1 end
  if dirty then return '1' end
  if pending == '1' then
    counts.cancelled = counts.cancelled + 1
  else
    counts.unchanged = counts.unchanged + 1
  end
  return '0'
end
