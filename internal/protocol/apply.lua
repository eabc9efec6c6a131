local ptype = redis.call('TYPE', KEYS[1])['ok']
if ptype ~= 'none' and ptype ~= 'zset' then
  return redis.error_reply('ANALYTICS_ABORT ' .. KEYS[1] .. ': pending set holds a ' .. ptype)
end
local b = tonumber(ARGV[3])
local m = tonumber(ARGV[4])
local g = tonumber(ARGV[6])
local gk = 1 + b + m
for j = 1, g do
  local gtype = redis.call('TYPE', KEYS[gk + j])['ok']
  if gtype ~= 'none' and gtype ~= 'set' then
    return redis.error_reply('ANALYTICS_ABORT ' .. KEYS[gk + j] .. ': cardinality set holds a ' .. gtype)
  end
end
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
local admitted, joined, folded = {}, {}, {}
for j = 1, g do
  local key, member = KEYS[gk + j], ARGV[7 + 2 * j]
  if redis.call('SISMEMBER', key, member) == 1 then
    admitted[j] = true
  else
    local size = redis.call('SCARD', key)
    if size < tonumber(ARGV[8 + 2 * j]) then
      redis.call('SADD', key, member)
      if size == 0 then
        redis.call('EXPIRE', key, ARGV[7])
      end
      admitted[j] = true
      joined[#joined + 1] = j
    else
      folded[#folded + 1] = j
    end
  end
end
local chosen, incrs, created, overflowed = {}, {}, {}, {}
local function undo(key, err)
  for i = #chosen, 1, -1 do
    if created[i] then
      redis.call('DEL', chosen[i])
    else
      redis.call('DECRBY', chosen[i], incrs[i])
    end
  end
  for j = 2, 1 + b + m do
    redis.call('DEL', KEYS[j])
  end
  for _, j in ipairs(joined) do
    redis.call('SREM', KEYS[gk + j], ARGV[7 + 2 * j])
  end
  return redis.error_reply('ANALYTICS_ABORT ' .. key .. ': ' .. err)
end
local k = 2 + b + m + g
local a = 9 + 2 * g
local u = tonumber(ARGV[8])
for c = 1, u do
  local key, incr = KEYS[k], ARGV[a]
  k, a = k + 1, a + 1
  local r = redis.pcall('INCRBY', key, incr)
  if type(r) == 'table' and r.err then
    return undo(key, r.err)
  end
  chosen[#chosen + 1] = key
  incrs[#incrs + 1] = incr
  created[#chosen] = (r == tonumber(incr))
end
local c = u
while k <= #KEYS do
  c = c + 1
  local incr, tg, dg, isSum = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3] == '1'
  a = a + 4
  local width, pick = 1, 0
  if tg > 0 then
    width = 2
    if not admitted[tg] then
      pick = 1
    end
  end
  if dg > 0 then
    if not admitted[dg] then
      pick = pick + width
    end
    width = width * 2
  end
  local key = KEYS[k + pick]
  k = k + width
  local isNew
  if isSum then
    isNew = redis.call('EXISTS', key) == 0
  end
  local r = redis.pcall('INCRBY', key, incr)
  if type(r) == 'table' and r.err then
    if isSum and string.find(r.err, 'overflow', 1, true) then
      overflowed[#overflowed + 1] = c
    else
      return undo(key, r.err)
    end
  else
    if not isSum then
      isNew = (r == tonumber(incr))
    end
    chosen[#chosen + 1] = key
    incrs[#incrs + 1] = incr
    created[#chosen] = isNew
  end
end
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
local members = {}
local numCreated, added = 0, 0
for i = 1, #chosen do
  if created[i] then
    redis.call('EXPIRE', chosen[i], ARGV[1])
    numCreated = numCreated + 1
    members[#members + 1] = now
    members[#members + 1] = chosen[i]
    if #members >= 1000 then
      added = added + redis.call('ZADD', KEYS[1], 'NX', unpack(members))
      members = {}
    end
  end
end
if #members > 0 then
  added = added + redis.call('ZADD', KEYS[1], 'NX', unpack(members))
end
local reply = {1, numCreated - added, #folded}
for _, j in ipairs(folded) do
  reply[#reply + 1] = j
end
for _, i in ipairs(overflowed) do
  reply[#reply + 1] = i
end
return reply
