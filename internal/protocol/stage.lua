local pending, index, staging, claim, generation = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXPIRE', claim, ARGV[5]) == 1 then
  local expired = 0
  local c = redis.pcall('HGETALL', claim)
  if type(c) == 'table' and not c.err then
    for i = 1, #c, 2 do
      if c[i] == 'expired' then
        expired = tonumber(c[i + 1]) or 0
      end
    end
  end
  return {expired, 0, {}, 1}
end
local popped = redis.call('ZPOPMIN', pending, ARGV[1])
local n = #popped / 2
if n == 0 then
  return {0, 0, {}, 0}
end
redis.call('HSET', claim, 'expired', 0)
redis.call('EXPIRE', claim, ARGV[5])
redis.call('SET', generation, ARGV[2], 'EX', ARGV[5])
local prefixes = {ARGV[3], ARGV[4], ARGV[6], ARGV[7]}
local function isCounter(key)
  for _, p in ipairs(prefixes) do
    if string.sub(key, 1, #p) == p then
      return true
    end
  end
  return false
end
local flat, f, expired = {}, 0, 0
for i = 1, #popped, 2 do
  local key = popped[i]
  local v = '!foreign'
  if isCounter(key) then
    v = redis.pcall('GETDEL', key)
    if type(v) == 'table' and v.err then
      v = '!wrongtype'
    end
  end
  if v then
    flat[f + 1] = key
    flat[f + 2] = v
    f = f + 2
  else
    expired = expired + 1
  end
end
if expired > 0 then
  redis.call('HSET', claim, 'expired', expired)
end
for i = 1, f, 1000 do
  redis.call('HSET', staging, unpack(flat, i, math.min(i + 999, f)))
end
if f > 0 then
  local t = redis.call('TIME')
  redis.call('ZADD', index, t[1] * 1000 + math.floor(t[2] / 1000), ARGV[2])
end
return {expired, n, flat, 0}
