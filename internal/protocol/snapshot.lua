local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local atRisk = 0
local age = tonumber(ARGV[1])
if age > 0 then
  atRisk = redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. (now - age))
end
return {now, atRisk}
