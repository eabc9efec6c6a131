if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 2, #ARGV, 3 do
    local ok = false
    if ARGV[i] == 'i' then
      local r = redis.pcall('HINCRBY', KEYS[3], ARGV[i + 1], ARGV[i + 2])
      ok = not (type(r) == 'table' and r.err)
    end
    if not ok then
      redis.call('HSET', KEYS[3], ARGV[i + 1] .. '#' .. ARGV[1], ARGV[i + 2])
    end
  end
  redis.call('UNLINK', KEYS[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
