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
  results[p] = apply_push(keys, args)
end
return results
