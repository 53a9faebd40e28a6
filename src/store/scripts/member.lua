-- member.lua: helpers for a member's value in a cohort's want hash,
-- "<version>|<pending><desired><states>" (the format is described in apply.lua).
-- Prepended to every script that reads or writes members; defines no keys.

-- Splits a member value into version text, pending, desired and link states.
local function unpack_member(v)
  local bar = string.find(v, '|', 1, true)
  return string.sub(v, 1, bar - 1), string.sub(v, bar + 1, bar + 1),
         string.sub(v, bar + 2, bar + 2), string.sub(v, bar + 3)
end

local function pack_member(version, pending, desired, states)
  return version .. '|' .. pending .. desired .. states
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
