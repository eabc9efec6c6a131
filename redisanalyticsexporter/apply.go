package redisanalyticsexporter

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/collector/consumer/consumererror"

	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
)

// abortPrefix starts the error the script returns after undoing a failed
// increment: the batch changed nothing and retrying it would fail the same way.
const abortPrefix = "ANALYTICS_ABORT"

// applySource is the only way counters are written. One call applies a
// group of b pushes (group commit, committer.go), each with its batch marker:
//
//	KEYS[1]              pending sorted set (counter key -> Unix ms it first became pending)
//	KEYS[2…1+b]          batch markers, one per push of the group (its batch id)
//	KEYS[2+b…1+b+m]      resource markers, one per fingerprinted resource entry (dedup.go)
//	KEYS[2+b+m…]         counter keys, each distinct
//	ARGV[1]              counter TTL in seconds
//	ARGV[2]              batch marker TTL in seconds
//	ARGV[3]              b, the number of batch markers (at least 1)
//	ARGV[4]              m, the number of resource markers
//	ARGV[5]              resource marker TTL in seconds (the dedup window)
//	ARGV[6…]             increments, in the order of the counter keys
//
// It answers with an array whose first element says what it did:
//
//	{0, i…}        the batch markers KEYS[1+i] exist: those pushes were applied
//	               before (a retry whose first reply was lost, or whose WAIT
//	               for replicas failed). It changed nothing but their TTLs;
//	               the caller answers those pushes and calls again without
//	               them.
//	{1, lost}      applied. lost is the number of counter keys it created
//	               whose pending-set entry already existed: such a key
//	               expired (ttl) before a flush moved it, and its count is
//	               gone.
//	{2, j…}        the resource markers KEYS[1+b+j] exist. It changed nothing
//	               but their TTLs: the caller drops those entries (already
//	               counted) and calls again with the same batch ids.
//
// Its first write sets the first batch marker with SET NX, because that may
// allocate: Redis refuses such a command inside a script when it was at
// maxmemory (with noeviction) as the script started, but only as the
// script's first write, since it cannot stop a script half-way. So a full
// Redis refuses the whole group with an OOM error (retried) before it
// changes anything; a first write that cannot allocate (EXPIRE) would let
// every later command through and grow Redis past maxmemory.
//
// The {0, …} and {2, …} paths still write (EXPIRE) on purpose: with
// wait_replicas, the WAIT that follows the script waits for the replication
// offset of this connection, which then lies past the writes that counted
// the batch or the entries, even when they came from another connection or
// another collector.
//
// Scripts run atomically but do not roll back, so a failed INCRBY (WRONGTYPE,
// overflow) is undone by hand, markers included: the group is all or
// nothing. The pending set's type is checked first, so the later ZADD cannot
// fail half-way. unpack() is chunked below Lua's C stack limit.
//
// Only a key this script created gets its TTL and its pending-set entry: a
// counter key that already exists is always pending already, because this
// script adds it in the step that creates it and the flusher's STAGE removes
// the pending entry in the step that deletes the key. So ZADD NX adding fewer
// members than keys were created means keys expired while pending. The
// pending score is Redis' clock (TIME), like the flusher's staging ages, so a
// collector with a skewed clock cannot hide counters from the flusher's
// at-risk check.
const applySource = `
local ptype = redis.call('TYPE', KEYS[1])['ok']
if ptype ~= 'none' and ptype ~= 'zset' then
  return redis.error_reply('` + abortPrefix + ` ' .. KEYS[1] .. ': pending set holds a ' .. ptype)
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
    return redis.error_reply('` + abortPrefix + ` ' .. KEYS[i] .. ': ' .. r.err)
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
`

// applyOutcome is what the script did with a batch.
type applyOutcome uint8

const (
	outcomeApplied applyOutcome = iota + 1
	// outcomeAppliedBefore: some batch markers exist; nothing was written.
	// applyResult.positions lists them.
	outcomeAppliedBefore
	// outcomeDuplicateResources: some resource markers exist; nothing was
	// written. applyResult.positions lists them.
	outcomeDuplicateResources
)

// applyResult is the script's answer.
type applyResult struct {
	outcome applyOutcome
	// positions holds the 0-based positions, among the batch markers or the
	// resource markers, of the markers that exist.
	positions []int
	// expired is the number of counter keys created by this batch that had
	// expired before a flush moved them (outcomeApplied only).
	expired int64
}

var errUnexpectedReply = errors.New("redis apply counters: unexpected script result")

// runApply sends the script (EVALSHA, falling back to EVAL on NOSCRIPT,
// followed by WAIT with wait_replicas) and classifies its error: see
// classifyRedisError.
func runApply(ctx context.Context, runner *redisconn.ScriptRunner, script *redisconn.Script, keys []string, args []any) (applyResult, error) {
	res, err := runner.Run(ctx, script, keys, args...).Result()
	if err != nil {
		return applyResult{}, classifyRedisError(err)
	}
	return parseApplyReply(res)
}

// parseApplyReply reads the script's answer (see applySource).
func parseApplyReply(res any) (applyResult, error) {
	unexpected := consumererror.NewPermanent(fmt.Errorf("%w %v", errUnexpectedReply, res))
	arr, ok := res.([]any)
	if !ok || len(arr) == 0 {
		return applyResult{}, unexpected
	}
	nums := make([]int64, len(arr))
	for i, x := range arr {
		if nums[i], ok = x.(int64); !ok {
			return applyResult{}, unexpected
		}
	}
	switch {
	case nums[0] == 1 && len(nums) == 2 && nums[1] >= 0:
		return applyResult{outcome: outcomeApplied, expired: nums[1]}, nil
	case (nums[0] == 0 || nums[0] == 2) && len(nums) > 1:
		positions := make([]int, 0, len(nums)-1)
		for _, j := range nums[1:] {
			if j < 1 {
				return applyResult{}, unexpected
			}
			positions = append(positions, int(j-1))
		}
		outcome := outcomeAppliedBefore
		if nums[0] == 2 {
			outcome = outcomeDuplicateResources
		}
		return applyResult{outcome: outcome, positions: positions}, nil
	default:
		return applyResult{}, unexpected
	}
}

// classifyRedisError marks the errors that would recur for the same batch as
// permanent, so exporterhelper drops the batch instead of retrying it:
// the script's own abort (WRONGTYPE or overflow on a counter key, or a pending
// key of the wrong type; nothing of the batch was written) and authentication
// or ACL refusals. Everything else (connection refused or reset, timeouts,
// pool timeouts, LOADING, BUSY, READONLY, OOM, too few replicas within
// wait_timeout…) is returned as is and retried; the batch id makes the retry
// safe.
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
