package pgflushextension

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
)

// stagingClaimTTL is how long a flush id's claim lives. It only has to
// outlast go-redis re-sending one STAGE call, which happens within one tick.
const stagingClaimTTL = time.Hour

// Values the STAGE script stores instead of a count for a pending member it
// could not read. They are not integers, so the flusher quarantines them.
const (
	// markerForeign: the member is not a counter key of this prefix; the key
	// (if any) was not touched.
	markerForeign = "!foreign"
	// markerWrongType: the key holds another Redis type; it was left alone.
	markerWrongType = "!wrongtype"
)

// stageScript is STAGE: it moves up to ARGV[1] of the oldest pending counters
// into a new staging hash, atomically.
//
//	KEYS[1] pending sorted set, KEYS[2] staging index, KEYS[3] staging hash of this flush id,
//	KEYS[4] claim of this flush id
//	ARGV[1] batch size, ARGV[2] flush id,
//	ARGV[3] daily/hourly counter key prefix, ARGV[4] per-user counter key prefix,
//	ARGV[5] claim TTL (seconds)
//
// It returns {expired, taken, {key1, value1, key2, value2, ...}, rerun}:
// taken is the number of members removed from the pending set, expired how
// many of them had no key any more. ZPOPMIN (ZRANGE 0 n-1 plus ZREM of the
// same members, oldest first) and the GETDEL of every counter happen in one
// atomic step, and the exporter's INCRBY + ZADD NX is atomic too, so an
// increment that lands during a flush is either in this batch or re-creates
// its key and re-adds it to the pending set: it is never orphaned.
//
// The flush id's score in the staging index is Redis's clock (TIME), never
// a collector's: recovery compares it with Redis's clock too (snapshot), so
// the grace period does not depend on how far the clocks of the staging and
// the recovering collectors are apart. GETDEL needs Redis 6.2 or later,
// where scripts are always replicated by their effects, so a script may
// write after TIME; the script has no shebang flags (no-writes and the
// like), and TIME reads the clock of the node that serves the prefix's slot
// in a cluster, the node that runs the whole script.
//
// If the flush id was claimed before (go-redis re-sent the script after a
// lost reply), it stages nothing, renews the claim's TTL and returns
// {expired, 0, {}, 1} with the expired count of the first run, which the
// claim (a hash) keeps: the caller reads the staging hash instead, which is
// empty when another flusher recovered and finished the entry meanwhile. The
// claim outlives the hash: checking the hash alone would let such a re-run
// stage a new batch under an id the ledger already holds, and that batch
// would then be skipped as applied. A STAGE that pops nothing claims
// nothing, so idle ticks leave no keys behind: a re-run of it may then stage
// under the id, which is safe because nothing can have been applied under an
// id that staged nothing. A claim that is not a hash (written by an older
// version's recovery) reads as 0 expired.
//
// Only keys under the two counter prefixes are ever read and deleted: a
// foreign member cannot delete another application's key (or an exporter
// batch marker). GETDEL fails with WRONGTYPE on a key of another type, which
// is left alone. unpack() is chunked at 1000 values to stay below the Lua
// stack limit.
//
// The counter keys are not declared (they are only known from the pending
// set), which a Redis Cluster allows because they share the prefix's hash
// tag. While that slot migrates, though, a counter may already be on the
// other node: GETDEL would then find nothing and the member would be popped
// for nothing. KEYS[3] and KEYS[4] prevent that: they never exist when STAGE
// runs for a new id, and a cluster refuses a multi-key script with a missing
// key while its slot migrates (TRYAGAIN, on both nodes), so STAGE waits for
// the end of the move. (Declaring only the pending set, STAGE loses counts
// in TestDistroCountsAcrossSlotMigration.)
//
// The first write is the EXPIRE of the claim, which Redis does not refuse at
// maxmemory (it is not a deny-oom command); a script that has written may go
// on, so a full Redis is still drained. Renewing the claim is a write on
// purpose: with wait_replicas, the WAIT after the re-run then covers the
// first run's GETDELs too, also on servers that move a client's replication
// offset only when it writes (Redis 7 moves it on every command; see
// redisconn.ScriptRunner).
var stageScript = redisconn.NewScript(`
local pending, index, staging, claim = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
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
local counterPrefix, userPrefix = ARGV[3], ARGV[4]
local cl, ul = #counterPrefix, #userPrefix
local flat, f, expired = {}, 0, 0
for i = 1, #popped, 2 do
  local key = popped[i]
  local v = '` + markerForeign + `'
  if string.sub(key, 1, cl) == counterPrefix or string.sub(key, 1, ul) == userPrefix then
    v = redis.pcall('GETDEL', key)
    if type(v) == 'table' and v.err then
      v = '` + markerWrongType + `'
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
`)

// finishScript is CLEANUP (plus the quarantine writes of the batch): after the
// PostgreSQL commit it records the unparsable counts in the quarantine hash,
// deletes the staging hash and removes the flush id from the staging index.
// With wait_replicas it waits too, so that a failover does not bring back the
// staging entry of a cleanup that succeeded. A cleanup lost in a failover
// counts nothing twice either way (the ledger holds the flush id): its entry
// comes back and a flusher recovers it, at the latest after the grace
// period. A cleanup whose WAIT falls short fails the tick.
//
//	KEYS[1] staging hash, KEYS[2] staging index, KEYS[3] quarantine hash
//	ARGV[1] flush id, then triples {op, field, value}: op "i" = HINCRBY, "s" = HSET
//
// The quarantine writes run only while the staging hash exists and in the same
// atomic step that deletes it, so a re-run (a retried command, or recovery of
// an entry whose cleanup reply was lost) never quarantines a count twice.
// A failing HINCRBY (overflow, or a non-integer already in the field) falls
// back to HSET under a field suffixed with the flush id, never aborting.
var finishScript = redisconn.NewScript(`
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
`)

// claimScript (re)claims a flush id: KEYS[1] its claim, ARGV[1] the claim's
// TTL in seconds. Recovery runs it with wait_replicas before it applies a
// staging entry that another process staged: the entry's STAGE may not have
// reached the replicas (its flusher died before its WAIT), and a failover
// after the PostgreSQL commit would then bring back the counters it took and
// count them twice. The WAIT after this write covers that STAGE
// (TestRecoveryWaitsForReplicas). An existing claim is only renewed (EXPIRE
// is a write), which keeps the expired count that STAGE stored in it.
var claimScript = redisconn.NewScript(`
if redis.call('EXPIRE', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[1], 'expired', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 1
`)

// timeScript returns Redis's clock in Unix ms. It runs as a script keyed on
// the staging index so that a cluster client sends it to the node that
// serves the prefix's slot, whose clock STAGE reads (a plain TIME has no key
// and would go to any node).
var timeScript = redisconn.NewScript(`
local t = redis.call('TIME')
return t[1] * 1000 + math.floor(t[2] / 1000)
`)

// errBadScriptReply is returned when a script reply does not have the expected shape.
var errBadScriptReply = errors.New("unexpected script reply")

// stagedField is one field of a staging hash: a raw counter key and its count
// as Redis returned it (normally a decimal integer).
type stagedField struct {
	key   string
	value string
}

// stageResult is the outcome of one STAGE script run.
type stageResult struct {
	// taken is the number of members removed from the pending set.
	taken int
	// expired counts taken members whose counter had expired (GETDEL nil).
	expired int
	// fields holds what was staged; empty if nothing was.
	fields []stagedField
	// alreadyStaged reports that the flush id was claimed before this run
	// (a retried script): fields is empty and the caller reads the hash;
	// expired is the first run's count, kept in the claim.
	alreadyStaged bool
}

// stagingEntry is a member of the staging index.
type stagingEntry struct {
	id string
	// created is the time of its STAGE, by Redis's clock.
	created time.Time
}

// redisSnapshot is what a tick reads before it flushes.
type redisSnapshot struct {
	pending int64
	// oldestPending is the first-pending time of the oldest counter; zero
	// when nothing is pending.
	oldestPending time.Time
	// atRisk counts pending counters older than the risk age; 0 when the
	// report is disabled.
	atRisk  int64
	staging []stagingEntry
	// redisNow is Redis's clock when the snapshot was read: the staging
	// entries' ages are measured against it, as their scores come from it.
	redisNow time.Time
}

// quarantineOp is one write to the quarantine hash.
type quarantineOp struct {
	incr  bool // HINCRBY (value is an integer) or HSET
	field string
	value string
}

// redisStore is the Redis side of the flush protocol.
type redisStore struct {
	client redis.UniversalClient
	// runner runs STAGE, CLEANUP and the claims of recovery, waiting for
	// replicas when configured.
	runner *redisconn.ScriptRunner
	schema protocol.Schema
	// counterPrefix and userPrefix are the key prefixes of the counter keys.
	counterPrefix string
	userPrefix    string
}

func newRedisStore(client redis.UniversalClient, runner *redisconn.ScriptRunner, schema protocol.Schema) *redisStore {
	p := schema.Prefix()
	return &redisStore{client: client, runner: runner, schema: schema, counterPrefix: p + ":counter:", userPrefix: p + ":user:"}
}

// stage runs STAGE for flush id.
func (s *redisStore) stage(ctx context.Context, id string, batchSize int) (stageResult, error) {
	keys := []string{s.schema.PendingKey(), s.schema.StagingIndexKey(), s.schema.StagingKey(id), s.schema.StagingClaimKey(id)}
	reply, err := s.runner.Run(ctx, stageScript, keys, batchSize, id,
		s.counterPrefix, s.userPrefix, int64(stagingClaimTTL/time.Second)).Slice()
	if err != nil {
		return stageResult{}, fmt.Errorf("redis stage: %w", err)
	}
	if len(reply) != 4 {
		return stageResult{}, fmt.Errorf("redis stage: %w: %d elements", errBadScriptReply, len(reply))
	}
	expired, ok1 := reply[0].(int64)
	taken, ok2 := reply[1].(int64)
	flat, ok3 := reply[2].([]any)
	rerun, ok4 := reply[3].(int64)
	if !ok1 || !ok2 || !ok3 || !ok4 || len(flat)%2 != 0 {
		return stageResult{}, fmt.Errorf("redis stage: %w", errBadScriptReply)
	}
	if rerun == 1 {
		return stageResult{alreadyStaged: true, expired: int(expired)}, nil
	}
	res := stageResult{taken: int(taken), expired: int(expired), fields: make([]stagedField, 0, len(flat)/2)}
	for i := 0; i < len(flat); i += 2 {
		k, okK := flat[i].(string)
		v, okV := flat[i+1].(string)
		if !okK || !okV {
			return stageResult{}, fmt.Errorf("redis stage: %w: non-string field", errBadScriptReply)
		}
		res.fields = append(res.fields, stagedField{key: k, value: v})
	}
	return res, nil
}

// confirmReplicated makes sure, with wait_replicas, that the replicas have
// the STAGE of flush id before it is applied (see claimScript). Without
// wait_replicas it does nothing.
func (s *redisStore) confirmReplicated(ctx context.Context, id string) error {
	if !s.runner.WaitsForReplicas() {
		return nil
	}
	keys := []string{s.schema.StagingClaimKey(id)}
	if err := s.runner.Run(ctx, claimScript, keys, int64(stagingClaimTTL/time.Second)).Err(); err != nil {
		return fmt.Errorf("redis claim staging %s: %w", id, err)
	}
	return nil
}

// readStaging returns the content of the staging hash of flush id; empty when
// it no longer exists (another flusher cleaned it up).
func (s *redisStore) readStaging(ctx context.Context, id string) ([]stagedField, error) {
	m, err := s.client.HGetAll(ctx, s.schema.StagingKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("redis read staging %s: %w", id, err)
	}
	fields := make([]stagedField, 0, len(m))
	for k, v := range m {
		fields = append(fields, stagedField{key: k, value: v})
	}
	return fields, nil
}

// finish runs CLEANUP for flush id, with the batch's quarantine writes.
func (s *redisStore) finish(ctx context.Context, id string, quarantine []quarantineOp) error {
	keys := []string{s.schema.StagingKey(id), s.schema.StagingIndexKey(), s.schema.QuarantineKey()}
	args := make([]any, 0, 1+3*len(quarantine))
	args = append(args, id)
	for _, q := range quarantine {
		op := "s"
		if q.incr {
			op = "i"
		}
		args = append(args, op, q.field, q.value)
	}
	if err := s.runner.Run(ctx, finishScript, keys, args...).Err(); err != nil {
		return fmt.Errorf("redis clean up staging %s: %w", id, err)
	}
	return nil
}

// leftInRedis returns, in one round trip, the number of pending counters
// and of staging entries.
func (s *redisStore) leftInRedis(ctx context.Context) (pending, staging int64, err error) {
	var card, index *redis.IntCmd
	_, err = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		card = p.ZCard(ctx, s.schema.PendingKey())
		index = p.ZCard(ctx, s.schema.StagingIndexKey())
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("redis count pending and staging: %w", err)
	}
	return card.Val(), index.Val(), nil
}

// snapshot reads, in one round trip, the pending set's size, its oldest
// member, how many members are older than riskAge (skipped when riskAge is
// 0), the whole staging index and Redis's clock. now is this collector's
// clock: the pending set's scores are the exporters' clocks, and riskAge is
// measured against it.
func (s *redisStore) snapshot(ctx context.Context, now time.Time, riskAge time.Duration) (redisSnapshot, error) {
	var (
		card     *redis.IntCmd
		oldest   *redis.ZSliceCmd
		atRisk   *redis.IntCmd
		staging  *redis.ZSliceCmd
		redisNow *redis.Cmd
	)
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		card = p.ZCard(ctx, s.schema.PendingKey())
		oldest = p.ZRangeWithScores(ctx, s.schema.PendingKey(), 0, 0)
		if riskAge > 0 {
			atRisk = p.ZCount(ctx, s.schema.PendingKey(), "-inf", "("+strconv.FormatInt(now.Add(-riskAge).UnixMilli(), 10))
		}
		staging = p.ZRangeWithScores(ctx, s.schema.StagingIndexKey(), 0, -1)
		redisNow = timeScript.Eval(ctx, p, []string{s.schema.StagingIndexKey()})
		return nil
	})
	if err != nil {
		return redisSnapshot{}, fmt.Errorf("redis read pending and staging: %w", err)
	}
	ms, err := redisNow.Int64()
	if err != nil {
		return redisSnapshot{}, fmt.Errorf("redis read TIME: %w", err)
	}
	snap := redisSnapshot{pending: card.Val(), redisNow: time.UnixMilli(ms)}
	if z := oldest.Val(); len(z) > 0 {
		snap.oldestPending = time.UnixMilli(int64(z[0].Score))
	}
	if atRisk != nil {
		snap.atRisk = atRisk.Val()
	}
	for _, z := range staging.Val() {
		id, _ := z.Member.(string)
		snap.staging = append(snap.staging, stagingEntry{id: id, created: time.UnixMilli(int64(z.Score))})
	}
	return snap, nil
}
