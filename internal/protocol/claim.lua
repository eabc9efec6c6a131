if redis.call('EXPIRE', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[1], 'expired', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 1
