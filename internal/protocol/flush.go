package protocol

import (
	"context"
	_ "embed" // the Lua scripts
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
)

// StagingClaimTTL is how long a flush id's claim lives. It only has to
// outlast go-redis re-sending one STAGE call, which happens within one tick.
const StagingClaimTTL = time.Hour

// Values the STAGE script stores instead of a count for a pending member it
// could not read. They are not integers, so the flusher quarantines them.
const (
	// MarkerForeign: the member is not a counter key of this prefix; the key
	// (if any) was not touched.
	MarkerForeign = "!foreign"
	// MarkerWrongType: the key holds another Redis type; it was left alone.
	MarkerWrongType = "!wrongtype"
)

// stageScript is STAGE: it moves up to ARGV[1] of the oldest pending counters
// into a new staging hash, atomically.
//
//	KEYS[1] pending sorted set, KEYS[2] staging index, KEYS[3] staging hash of this flush id,
//	KEYS[4] claim of this flush id, KEYS[5] flush generation
//	ARGV[1] batch size, ARGV[2] flush id,
//	ARGV[3] daily/hourly counter key prefix, ARGV[4] per-user counter key prefix,
//	ARGV[5] claim TTL (seconds), ARGV[6] property counter key prefix,
//	ARGV[7] sum counter key prefix
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
// A run that pops members sets the flush generation to its flush id (with
// the claim's TTL), in the same atomic step: a reader that finds the same
// generation before and after its reads knows that no count left a counter
// key in between (see read.go).
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
// Only keys under the four counter prefixes are ever read and deleted: a
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
//
//go:embed stage.lua
var stageScriptSource string

var stageScript = redisconn.NewScript(stageScriptSource)

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
//
//go:embed finish.lua
var finishScriptSource string

var finishScript = redisconn.NewScript(finishScriptSource)

// claimScript (re)claims a flush id: KEYS[1] its claim, ARGV[1] the claim's
// TTL in seconds. Recovery runs it with wait_replicas before it applies a
// staging entry that another process staged: the entry's STAGE may not have
// reached the replicas (its flusher died before its WAIT), and a failover
// after the PostgreSQL commit would then bring back the counters it took and
// count them twice. The WAIT after this write covers that STAGE
// (TestRecoveryWaitsForReplicas). An existing claim is only renewed (EXPIRE
// is a write), which keeps the expired count that STAGE stored in it.
//
//go:embed claim.lua
var claimScriptSource string

var claimScript = redisconn.NewScript(claimScriptSource)

// snapshotScript returns Redis' clock in Unix ms and, when ARGV[1] (an age
// in ms) is positive, how many pending counters are older than that age by
// the same clock: KEYS[1] staging index, KEYS[2] pending set. It is keyed on
// the staging index so that a cluster client sends it to the node that
// serves the prefix's slot, whose clock STAGE and the apply script read (a
// plain TIME has no key and would go to any node).
//
//go:embed snapshot.lua
var snapshotSource string

var snapshotScript = redisconn.NewScript(snapshotSource)

// errBadScriptReply is returned when a script reply does not have the expected shape.
var errBadScriptReply = errors.New("unexpected script reply")

// StagedField is one field of a staging hash: a raw counter key and its count
// as Redis returned it (normally a decimal integer).
type StagedField struct {
	Key   string
	Value string
}

// StageResult is the outcome of one STAGE script run.
type StageResult struct {
	// Taken is the number of members removed from the pending set.
	Taken int
	// Expired counts taken members whose counter had expired (GETDEL nil).
	Expired int
	// Fields holds what was staged; empty if nothing was.
	Fields []StagedField
	// AlreadyStaged reports that the flush id was claimed before this run
	// (a retried script): Fields is empty and the caller reads the hash;
	// Expired is the first run's count, kept in the claim.
	AlreadyStaged bool
}

// StagingEntry is a member of the staging index.
type StagingEntry struct {
	ID string
	// Created is the time of its STAGE, by Redis's clock.
	Created time.Time
}

// Snapshot is what a tick reads before it flushes.
type Snapshot struct {
	Pending int64
	// OldestPending is the first-pending time of the oldest counter, by
	// Redis' clock; zero when nothing is pending.
	OldestPending time.Time
	// AtRisk counts pending counters older than the risk age; 0 when the
	// report is disabled.
	AtRisk  int64
	Staging []StagingEntry
	// RedisNow is Redis' clock when the snapshot was read: the pending and
	// staging ages are measured against it, as their scores come from it.
	RedisNow time.Time
}

// QuarantineOp is one write to the quarantine hash.
type QuarantineOp struct {
	Incr  bool // HINCRBY (Value is an integer) or HSET
	Field string
	Value string
}

// FlushStore is the Redis side of the flush protocol: the typed calls of
// the flusher's scripts.
type FlushStore struct {
	client redis.UniversalClient
	// runner runs STAGE, FINISH and the claims of recovery, waiting for
	// replicas when configured.
	runner *redisconn.ScriptRunner
	schema Schema
	// counterPrefix, userPrefix, propPrefix and sumPrefix are the key
	// prefixes of the counter keys.
	counterPrefix string
	userPrefix    string
	propPrefix    string
	sumPrefix     string
}

// NewFlushStore returns the flush protocol's calls on client.
func NewFlushStore(client redis.UniversalClient, runner *redisconn.ScriptRunner, schema Schema) *FlushStore {
	p := schema.Prefix()
	return &FlushStore{
		client: client, runner: runner, schema: schema,
		counterPrefix: p + ":counter:", userPrefix: p + ":user:", propPrefix: p + ":prop:", sumPrefix: p + ":sum:",
	}
}

// Stage runs STAGE for flush id: it moves up to batchSize of the oldest
// pending counters into the staging hash of id.
func (s *FlushStore) Stage(ctx context.Context, id string, batchSize int) (StageResult, error) {
	keys := []string{
		s.schema.PendingKey(), s.schema.StagingIndexKey(), s.schema.StagingKey(id), s.schema.StagingClaimKey(id),
		s.schema.FlushGenerationKey(),
	}
	reply, err := s.runner.Run(ctx, stageScript, keys, batchSize, id,
		s.counterPrefix, s.userPrefix, int64(StagingClaimTTL/time.Second), s.propPrefix, s.sumPrefix).Slice()
	if err != nil {
		return StageResult{}, fmt.Errorf("redis stage: %w", err)
	}
	if len(reply) != 4 {
		return StageResult{}, fmt.Errorf("redis stage: %w: %d elements", errBadScriptReply, len(reply))
	}
	expired, ok1 := reply[0].(int64)
	taken, ok2 := reply[1].(int64)
	flat, ok3 := reply[2].([]any)
	rerun, ok4 := reply[3].(int64)
	if !ok1 || !ok2 || !ok3 || !ok4 || len(flat)%2 != 0 {
		return StageResult{}, fmt.Errorf("redis stage: %w", errBadScriptReply)
	}
	if rerun == 1 {
		return StageResult{AlreadyStaged: true, Expired: int(expired)}, nil
	}
	res := StageResult{Taken: int(taken), Expired: int(expired), Fields: make([]StagedField, 0, len(flat)/2)}
	for i := 0; i < len(flat); i += 2 {
		k, okK := flat[i].(string)
		v, okV := flat[i+1].(string)
		if !okK || !okV {
			return StageResult{}, fmt.Errorf("redis stage: %w: non-string field", errBadScriptReply)
		}
		res.Fields = append(res.Fields, StagedField{Key: k, Value: v})
	}
	return res, nil
}

// ConfirmReplicated makes sure, with wait_replicas, that the replicas have
// the STAGE of flush id before it is applied (see claim.lua): it claims the
// id. Without wait_replicas it does nothing.
func (s *FlushStore) ConfirmReplicated(ctx context.Context, id string) error {
	if !s.runner.WaitsForReplicas() {
		return nil
	}
	return s.Claim(ctx, id)
}

// Claim (re)claims flush id (claim.lua), waiting for replicas when
// configured.
func (s *FlushStore) Claim(ctx context.Context, id string) error {
	keys := []string{s.schema.StagingClaimKey(id)}
	if err := s.runner.Run(ctx, claimScript, keys, int64(StagingClaimTTL/time.Second)).Err(); err != nil {
		return fmt.Errorf("redis claim staging %s: %w", id, err)
	}
	return nil
}

// ReadStaging returns the content of the staging hash of flush id; empty
// when it no longer exists (another flusher finished it).
func (s *FlushStore) ReadStaging(ctx context.Context, id string) ([]StagedField, error) {
	m, err := s.client.HGetAll(ctx, s.schema.StagingKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("redis read staging %s: %w", id, err)
	}
	fields := make([]StagedField, 0, len(m))
	for k, v := range m {
		fields = append(fields, StagedField{Key: k, Value: v})
	}
	return fields, nil
}

// Finish runs FINISH for flush id, with the batch's quarantine writes: the
// staging entry goes once PostgreSQL committed it.
func (s *FlushStore) Finish(ctx context.Context, id string, quarantine []QuarantineOp) error {
	keys := []string{s.schema.StagingKey(id), s.schema.StagingIndexKey(), s.schema.QuarantineKey()}
	args := make([]any, 0, 1+3*len(quarantine))
	args = append(args, id)
	for _, q := range quarantine {
		op := "s"
		if q.Incr {
			op = "i"
		}
		args = append(args, op, q.Field, q.Value)
	}
	if err := s.runner.Run(ctx, finishScript, keys, args...).Err(); err != nil {
		return fmt.Errorf("redis clean up staging %s: %w", id, err)
	}
	return nil
}

// LeftInRedis returns, in one round trip, the number of pending counters
// and of staging entries.
func (s *FlushStore) LeftInRedis(ctx context.Context) (pending, staging int64, err error) {
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

// Snapshot reads, in one round trip, the pending set's size and its oldest
// member, how many members are older than riskAge (skipped when riskAge is
// 0), the whole staging index and Redis' clock. Every age is by Redis'
// clock, which scored the pending set and the staging index.
func (s *FlushStore) Snapshot(ctx context.Context, riskAge time.Duration) (Snapshot, error) {
	var (
		card    *redis.IntCmd
		oldest  *redis.ZSliceCmd
		staging *redis.ZSliceCmd
		clock   *redis.Cmd
	)
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		card = p.ZCard(ctx, s.schema.PendingKey())
		oldest = p.ZRangeWithScores(ctx, s.schema.PendingKey(), 0, 0)
		staging = p.ZRangeWithScores(ctx, s.schema.StagingIndexKey(), 0, -1)
		clock = snapshotScript.Eval(ctx, p, []string{s.schema.StagingIndexKey(), s.schema.PendingKey()}, riskAge.Milliseconds())
		return nil
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("redis read pending and staging: %w", err)
	}
	nums, err := clock.Int64Slice()
	if err != nil || len(nums) != 2 {
		return Snapshot{}, fmt.Errorf("redis read TIME: %w (%v)", errors.Join(err, errBadScriptReply), nums)
	}
	snap := Snapshot{Pending: card.Val(), RedisNow: time.UnixMilli(nums[0]), AtRisk: nums[1]}
	if z := oldest.Val(); len(z) > 0 {
		snap.OldestPending = time.UnixMilli(int64(z[0].Score))
	}
	for _, z := range staging.Val() {
		id, _ := z.Member.(string)
		snap.Staging = append(snap.Staging, StagingEntry{ID: id, Created: time.UnixMilli(int64(z.Score))})
	}
	return snap, nil
}

// StageScriptHash is the SHA1 of STAGE, as Redis' script cache knows it.
func StageScriptHash() string { return stageScript.Hash() }
