end

local function claim_batch(KEYS, ARGV)
