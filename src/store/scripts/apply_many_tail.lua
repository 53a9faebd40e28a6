end

local m = tonumber(ARGV[1])
local results = {}
local ki, ai = 0, 1 + 2 * m
for p = 1, m do
  local nk, na = tonumber(ARGV[2 * p]), tonumber(ARGV[2 * p + 1])
  local keys, args = {}, {}
  for j = 1, nk do keys[j] = KEYS[ki + j] end
  for j = 1, na do args[j] = ARGV[ai + j] end
  ki, ai = ki + nk, ai + na
  -- A push whose apply raises (a key of the wrong type, say) fails alone:
  -- its error becomes its result, and the other pushes of the group go on
  -- (what the failing push wrote before the error stays, as it would for
  -- apply.lua alone).
  local ok, res = pcall(apply_push, keys, args)
  if ok then
    results[p] = res
  else
    local msg = type(res) == 'table' and (res.err or 'error') or tostring(res)
    -- Not an error reply: the client would fail the whole call on it.
    results[p] = {-1, msg}
  end
end
return results
