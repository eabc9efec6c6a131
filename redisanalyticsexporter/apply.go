package redisanalyticsexporter

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/collector/consumer/consumererror"
)

// abortPrefix starts the error the script returns after undoing a failed
// increment: the batch changed nothing and retrying it would fail the same way.
const abortPrefix = "ANALYTICS_ABORT"

// applySource is the only way counters are written. One call applies one push:
//
//	KEYS[1]  pending sorted set (counter key -> Unix ms it first became pending)
//	KEYS[2]  batch marker of this push's batch id
//	KEYS[3…] counter keys, each distinct
//	ARGV[1]  counter TTL in seconds
//	ARGV[2]  now, Unix milliseconds
//	ARGV[3]  batch marker TTL in seconds
//	ARGV[4…] increment of KEYS[i] in ARGV[i+1]
//
// It returns 1 when applied and 0 when the batch id was applied before (a
// retry whose first reply was lost). Scripts run atomically but do not roll
// back, so a failed INCRBY (WRONGTYPE, overflow) is undone by hand: the batch
// is all or nothing. The pending set's type is checked first, so the later
// ZADD cannot fail half-way. unpack() is chunked below Lua's C stack limit.
//
// Only a key this script created gets its TTL and its pending-set entry: a
// counter key that already exists is always pending already, because this
// script adds it in the step that creates it and the flusher's STAGE removes
// the pending entry in the step that deletes the key. Skipping EXPIRE and
// ZADD for existing keys halves the script's work for counters that several
// batches hit between two flushes. The TTL therefore runs from a counter's
// creation (the first count after a flush), which is what bounds its life.
const applySource = `
local ptype = redis.call('TYPE', KEYS[1])['ok']
if ptype ~= 'none' and ptype ~= 'zset' then
  return redis.error_reply('` + abortPrefix + ` ' .. KEYS[1] .. ': pending set holds a ' .. ptype)
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  return 0
end
local n = #KEYS
local created = {}
for i = 3, n do
  local r = redis.pcall('INCRBY', KEYS[i], ARGV[i + 1])
  if type(r) == 'table' and r.err then
    for j = i - 1, 3, -1 do
      if created[j] then
        redis.call('DEL', KEYS[j])
      else
        redis.call('DECRBY', KEYS[j], ARGV[j + 1])
      end
    end
    redis.call('DEL', KEYS[2])
    return redis.error_reply('` + abortPrefix + ` ' .. KEYS[i] .. ': ' .. r.err)
  end
  created[i] = (r == tonumber(ARGV[i + 1]))
end
local members = {}
for i = 3, n do
  if created[i] then
    redis.call('EXPIRE', KEYS[i], ARGV[1])
    members[#members + 1] = ARGV[2]
    members[#members + 1] = KEYS[i]
    if #members >= 1000 then
      redis.call('ZADD', KEYS[1], 'NX', unpack(members))
      members = {}
    end
  end
end
if #members > 0 then
  redis.call('ZADD', KEYS[1], 'NX', unpack(members))
end
return 1
`

// applyOutcome is what the script did with a batch.
type applyOutcome uint8

const (
	outcomeApplied applyOutcome = iota + 1
	outcomeDeduplicated
)

// runApply sends the script (EVALSHA, falling back to EVAL on NOSCRIPT) and
// classifies its error: see classifyRedisError.
func runApply(ctx context.Context, client redis.Scripter, script *redis.Script, keys []string, args []any) (applyOutcome, error) {
	res, err := script.Run(ctx, client, keys, args...).Int64()
	if err != nil {
		return 0, classifyRedisError(err)
	}
	switch res {
	case 1:
		return outcomeApplied, nil
	case 0:
		return outcomeDeduplicated, nil
	default:
		return 0, consumererror.NewPermanent(fmt.Errorf("redis apply counters: unexpected script result %d", res))
	}
}

// classifyRedisError marks the errors that would recur for the same batch as
// permanent, so exporterhelper drops the batch instead of retrying it:
// the script's own abort (WRONGTYPE or overflow on a counter key, or a pending
// key of the wrong type; nothing of the batch was written) and authentication
// or ACL refusals. Everything else (connection refused or reset, timeouts,
// pool timeouts, LOADING, BUSY, READONLY, OOM…) is returned as is and retried;
// the batch id makes the retry safe.
func classifyRedisError(err error) error {
	wrapped := fmt.Errorf("redis apply counters: %w", err)
	if _, ok := errors.AsType[redis.Error](err); !ok {
		return wrapped
	}
	for _, prefix := range []string{abortPrefix, "NOAUTH", "WRONGPASS", "NOPERM"} {
		if redis.HasErrorPrefix(err, prefix) {
			return consumererror.NewPermanent(wrapped)
		}
	}
	return wrapped
}
