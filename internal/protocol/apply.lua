local ptype = redis.call('TYPE', KEYS[1])['ok']
if ptype ~= 'none' and ptype ~= 'zset' then
  return redis.error_reply('ANALYTICS_ABORT ' .. KEYS[1] .. ': pending set holds a ' .. ptype)
end
local b = tonumber(ARGV[3])
local m = tonumber(ARGV[4])
local firstSet = redis.call('SET', KEYS[2], '1', 'EX', ARGV[2], 'NX')
local applied = {0}
if not firstSet then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  applied[#applied + 1] = 1
end
for i = 2, b do
  if redis.call('EXPIRE', KEYS[1 + i], ARGV[2]) == 1 then
    applied[#applied + 1] = i
  end
end
if #applied > 1 then
  if firstSet then
    redis.call('DEL', KEYS[2])
  end
  return applied
end
local dups = {2}
for j = 1, m do
  if redis.call('EXPIRE', KEYS[1 + b + j], ARGV[5]) == 1 then
    dups[#dups + 1] = j
  end
end
if #dups > 1 then
  redis.call('DEL', KEYS[2])
  return dups
end
for i = 2, b do
  redis.call('SET', KEYS[1 + i], '1', 'EX', ARGV[2])
end
for j = 1, m do
  redis.call('SET', KEYS[1 + b + j], '1', 'EX', ARGV[5])
end
local n = #KEYS
local first = 2 + b + m
local off = 6 - first
local created = {}
for i = first, n do
  local r = redis.pcall('INCRBY', KEYS[i], ARGV[i + off])
  if type(r) == 'table' and r.err then
    for j = i - 1, first, -1 do
      if created[j] then
        redis.call('DEL', KEYS[j])
      else
        redis.call('DECRBY', KEYS[j], ARGV[j + off])
      end
    end
    for j = 2, 1 + b + m do
      redis.call('DEL', KEYS[j])
    end
    return redis.error_reply('ANALYTICS_ABORT ' .. KEYS[i] .. ': ' .. r.err)
  end
  created[i] = (r == tonumber(ARGV[i + off]))
end
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
local members = {}
local numCreated, added = 0, 0
for i = first, n do
  if created[i] then
    redis.call('EXPIRE', KEYS[i], ARGV[1])
    numCreated = numCreated + 1
    members[#members + 1] = now
    members[#members + 1] = KEYS[i]
    if #members >= 1000 then
      added = added + redis.call('ZADD', KEYS[1], 'NX', unpack(members))
      members = {}
    end
  end
end
if #members > 0 then
  added = added + redis.call('ZADD', KEYS[1], 'NX', unpack(members))
end
return {1, numCreated - added}
