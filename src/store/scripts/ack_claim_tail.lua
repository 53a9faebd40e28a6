end

local max = table.remove(ARGV)
local hold_until = table.remove(ARGV)
local acked = ack_batch(KEYS, ARGV)
if acked[1] == -1 then return {acked, {-1}} end
-- claim.lua's keys are ack.lua's first six and its eighth, in its own
-- order; its lease token, destination and link id are the ack's.
local claimed = claim_batch({KEYS[1], KEYS[3], KEYS[2], KEYS[4], KEYS[5], KEYS[6], KEYS[8]},
  {ARGV[1], max, ARGV[3], ARGV[4], hold_until, '0', max})
return {acked, claimed}
