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

// apply.lua is the only way counters are written. One call applies a group
// of b pushes (the exporter's group commit), each with its batch marker:
//
//	KEYS[1]              pending sorted set (counter key -> Unix ms it first became pending)
//	KEYS[2…1+b]          batch markers, one per push of the group (its batch id)
//	KEYS[2+b…1+b+m]      resource markers, one per fingerprinted resource entry (dedup.go)
//	KEYS[2+b+m…1+b+m+g]  cardinality sets, one per guard (see Guard)
//	KEYS[2+b+m+g…]       counters: first the u plain counts (no guard, not a
//	                     sum), their key each; then the others, per counter
//	                     its key and the keys it folds into: [type folded]
//	                     when it has a type guard, [value folded, both
//	                     folded] when it also has a value guard ([value
//	                     folded] when it has only that one)
//	ARGV[1]              counter TTL in seconds
//	ARGV[2]              batch marker TTL in seconds
//	ARGV[3]              b, the number of batch markers (at least 1)
//	ARGV[4]              m, the number of resource markers
//	ARGV[5]              resource marker TTL in seconds (the dedup window)
//	ARGV[6]              g, the number of guards
//	ARGV[7]              cardinality set TTL in seconds
//	ARGV[8]              u, the number of plain counts
//	ARGV[9…8+2g]         per guard: its member, its limit
//	ARGV[9+2g…]          per plain count: its increment; then per other
//	                     counter: increment, type guard, value guard (1-based
//	                     guard positions, 0 for none), 1 for a sum
//
// It answers with an array whose first element says what it did:
//
//	{0, i…}        the batch markers KEYS[1+i] exist: those pushes were applied
//	               before (a retry whose first reply was lost, or whose WAIT
//	               for replicas failed). It changed nothing but their TTLs;
//	               the caller answers those pushes and calls again without
//	               them.
//	{1, lost, f, j…, c…}
//	               applied. lost is the number of counter keys it created
//	               whose pending-set entry already existed: such a key
//	               expired (ttl) before a flush moved it, and its count is
//	               gone. The f guards j found their set full, so their
//	               counters went to the folded keys. The sum counters c
//	               (1-based among the counters, in KEYS order) would have
//	               overflowed a 64-bit integer and were left out.
//	{2, j…}        the resource markers KEYS[1+b+j] exist. It changed nothing
//	               but their TTLs: the caller drops those entries (already
//	               counted) and calls again with the same batch ids.
//
// A guard admits its member when the set holds it already or has room: the
// member joins it (the set's TTL is set as it is created). A full set folds
// the counters of that guard into OverflowValue, so totals stay exact while
// the keys stay bounded; every collector shares the sets, so the caps hold
// across them.
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
// or the overflow of a count) is undone by hand, markers and set members
// included: the group is all or nothing. The types of the pending set and
// the cardinality sets are checked first, so the later ZADD, SISMEMBER and
// SADD cannot fail half-way. A sum's overflow leaves out that one sum (the
// caller counts it as dropped) instead of refusing the group.
//
// unpack() is chunked below Lua's C stack limit.
//
// Only a key this script created gets its TTL and its pending-set entry (a
// count key is new when INCRBY answers its increment, counts being
// positive; a sum key when it did not exist before): a counter key that
// already exists is always pending already, because this
// script adds it in the step that creates it and the flusher's STAGE removes
// the pending entry in the step that deletes the key. So ZADD NX adding fewer
// members than keys were created means keys expired while pending. The
// pending score is Redis' clock (TIME), like the flusher's staging ages, so a
// collector with a skewed clock cannot hide counters from the flusher's
// at-risk check.
//
//go:embed apply.lua
var applySource string

var applyScript = redisconn.NewScript(applySource)

// AbortPrefix starts the error the apply script returns after undoing a
// failed increment: the group changed nothing, and a retry would fail the
// same way.
const AbortPrefix = "ANALYTICS_ABORT"

// Positions in the apply script's ARGV.
const (
	argCounterTTL = iota
	argBatchMarkerTTL
	argNumBatches
	argNumMarkers
	argDedupWindow
	argNumGuards
	argGuardTTL
	argNumPlain
	// headArgs is the number of ARGV entries before the guards'.
	headArgs
)

// ApplyOutcome is what the apply script did with a group.
type ApplyOutcome uint8

const (
	// Applied: every counter of the call was incremented.
	Applied ApplyOutcome = iota + 1
	// AppliedBefore: some batch markers exist; nothing was written.
	// ApplyResult.Positions lists them.
	AppliedBefore
	// DuplicateResources: some resource markers exist; nothing was written.
	// ApplyResult.Positions lists them.
	DuplicateResources
)

// ApplyResult is the apply script's answer.
type ApplyResult struct {
	Outcome ApplyOutcome
	// Positions holds the 0-based positions, among the batch markers
	// (AppliedBefore) or the resource markers (DuplicateResources), of the
	// markers that exist, in the order they were added to the call.
	Positions []int
	// Expired is the number of counter keys the call created whose pending
	// entry already existed: they expired before a flush moved them, and the
	// counts they held are gone (Applied only).
	Expired int64
	// Folded holds the 0-based positions, in the order they were added, of
	// the guards whose set was full: their counters went to OverflowValue
	// (Applied only).
	Folded []int
	// Overflowed holds the 0-based positions, in the order they were added,
	// of the sum counters left out because they would have overflowed
	// (Applied only).
	Overflowed []int
}

// ApplyTTLs are the lifetimes the apply script sets, rounded up to whole
// seconds (at least one).
type ApplyTTLs struct {
	// Counter runs from a counter key's creation.
	Counter time.Duration
	// BatchMarker must outlast every retry of a push.
	BatchMarker time.Duration
	// ResourceMarker is the dedup window.
	ResourceMarker time.Duration
	// Guard runs from a cardinality set's creation; it must outlive every
	// event that can still arrive for the set's day.
	Guard time.Duration
}

// ApplyCall holds the arguments of one apply call. It is built in place and
// reused across calls: the keys of each kind (markers, guards, counters) are
// substrings of one string, so they cost one allocation per kind.
type ApplyCall struct {
	schema Schema

	batchKeys []string
	markerBuf []byte
	markers   int
	guardBuf  []byte
	guardEnds []int
	guardArgs []any // member, limit per guard
	// Plain counts (no guard, not a sum) take one key and one argument;
	// the other counters their folded keys and four arguments.
	plain    counterSection
	guarded  counterSection
	counters int

	keys []string
	args []any
}

// NewApplyCall returns an empty call for schema.
func NewApplyCall(schema Schema) *ApplyCall { return &ApplyCall{schema: schema} }

// Reset empties the call, keeping its memory.
func (c *ApplyCall) Reset() {
	clear(c.batchKeys)
	clear(c.keys)
	clear(c.args)
	c.batchKeys, c.keys, c.args = c.batchKeys[:0], c.keys[:0], c.args[:0]
	clear(c.guardArgs)
	c.markerBuf, c.markers = c.markerBuf[:0], 0
	c.guardBuf, c.guardEnds, c.guardArgs = c.guardBuf[:0], c.guardEnds[:0], c.guardArgs[:0]
	c.plain.reset()
	c.guarded.reset()
	c.counters = 0
}

// counterSection holds the counters of one layout: their keys in one
// buffer, their arguments, and the position each was added at.
type counterSection struct {
	buf       []byte
	ends      []int
	args      []any
	positions []int
}

func (s *counterSection) reset() {
	clear(s.args)
	s.buf, s.ends, s.args, s.positions = s.buf[:0], s.ends[:0], s.args[:0], s.positions[:0]
}

// appendKey appends a key of the current counter.
func (s *counterSection) appendKey(schema Schema, ctr Counter) {
	s.buf = schema.AppendKey(s.buf, ctr)
	s.ends = append(s.ends, len(s.buf))
}

// AddBatch adds the batch marker of a push (its batch id). A call needs at
// least one.
func (c *ApplyCall) AddBatch(id string) { c.batchKeys = append(c.batchKeys, c.schema.BatchKey(id)) }

// AddResourceMarker adds the marker of a resource entry with the 128-bit
// identity fingerprint hi, lo.
func (c *ApplyCall) AddResourceMarker(hi, lo uint64) {
	c.markerBuf = c.schema.AppendResourceKey(c.markerBuf, hi, lo)
	c.markers++
}

// AddGuard adds a cardinality check and returns its 1-based position, which
// counters name in their CounterGuards. Add each distinct guard once.
func (c *ApplyCall) AddGuard(g Guard) int {
	c.guardBuf = c.schema.AppendGuardKey(c.guardBuf, g)
	c.guardEnds = append(c.guardEnds, len(c.guardBuf))
	c.guardArgs = append(c.guardArgs, g.Member, g.Limit)
	return len(c.guardEnds)
}

// NumGuards is the number of guards added.
func (c *ApplyCall) NumGuards() int { return len(c.guardEnds) }

// AddCounter adds an increment of n to counter ctr. Add each counter once
// per call (a counter added twice is incremented twice, at the cost of a
// second key); counts are positive, sums may be any value.
func (c *ApplyCall) AddCounter(ctr Counter, n int64) { c.AddGuardedCounter(ctr, n, CounterGuards{}) }

// AddGuardedCounter adds an increment of n to counter ctr, or to the key its
// guards fold it into (see AddCounter).
func (c *ApplyCall) AddGuardedCounter(ctr Counter, n int64, guards CounterGuards) {
	if !ctr.Family.hasDim() {
		guards.Dim = 0
	}
	isSum := ctr.Family == SumDaily || ctr.Family == SumHourly
	if guards.Type == 0 && guards.Dim == 0 && !isSum {
		c.plain.appendKey(c.schema, ctr)
		c.plain.args = append(c.plain.args, n)
		c.plain.positions = append(c.plain.positions, c.counters)
		c.counters++
		return
	}
	s := &c.guarded
	s.appendKey(c.schema, ctr)
	if guards.Type > 0 {
		s.appendKey(c.schema, ctr.Folded(true, false))
	}
	if guards.Dim > 0 {
		s.appendKey(c.schema, ctr.Folded(false, true))
		if guards.Type > 0 {
			s.appendKey(c.schema, ctr.Folded(true, true))
		}
	}
	var sum int64
	if isSum {
		sum = 1
	}
	s.args = append(s.args, n, int64(guards.Type), int64(guards.Dim), sum)
	s.positions = append(s.positions, c.counters)
	c.counters++
}

// NumCounters is the number of counters added.
func (c *ApplyCall) NumCounters() int { return c.counters }

// Build lays out KEYS and ARGV (see apply.lua) with ttls; Run sends them.
// Keys and Args return them until the next Reset.
func (c *ApplyCall) Build(ttls ApplyTTLs) {
	c.keys, c.args = c.keys[:0], c.args[:0]
	c.keys = append(c.keys, c.schema.PendingKey())
	c.keys = append(c.keys, c.batchKeys...)
	if c.markers > 0 {
		markers := string(c.markerBuf)
		n := len(markers) / c.markers
		for j := range c.markers {
			c.keys = append(c.keys, markers[j*n:(j+1)*n])
		}
	}
	c.keys = appendSplit(c.keys, string(c.guardBuf), c.guardEnds)
	c.keys = appendSplit(c.keys, string(c.plain.buf), c.plain.ends)
	c.keys = appendSplit(c.keys, string(c.guarded.buf), c.guarded.ends)
	var head [headArgs]any
	head[argCounterTTL] = seconds(ttls.Counter)
	head[argBatchMarkerTTL] = seconds(ttls.BatchMarker)
	head[argNumBatches] = int64(len(c.batchKeys))
	head[argNumMarkers] = int64(c.markers)
	head[argDedupWindow] = seconds(ttls.ResourceMarker)
	head[argNumGuards] = int64(len(c.guardEnds))
	head[argGuardTTL] = seconds(ttls.Guard)
	head[argNumPlain] = int64(len(c.plain.positions))
	c.args = append(c.args, head[:]...)
	c.args = append(c.args, c.guardArgs...)
	c.args = append(c.args, c.plain.args...)
	c.args = append(c.args, c.guarded.args...)
}

// appendSplit appends the substrings of all that end at ends to dst: the
// keys of one kind share one string, so they cost one allocation.
func appendSplit(dst []string, all string, ends []int) []string {
	start := 0
	for _, end := range ends {
		dst = append(dst, all[start:end])
		start = end
	}
	return dst
}

// Keys returns the built KEYS: the pending set, the batch markers, the
// resource markers, the cardinality sets, the counter keys.
func (c *ApplyCall) Keys() []string { return c.keys }

// Args returns the built ARGV.
func (c *ApplyCall) Args() []any { return c.args }

// Run sends the built call (EVALSHA, EVAL after NOSCRIPT, then WAIT with
// wait_replicas) and reads the answer. Redis errors are returned wrapped;
// an abort by the script starts with AbortPrefix.
func (c *ApplyCall) Run(ctx context.Context, runner *redisconn.ScriptRunner) (ApplyResult, error) {
	if len(c.batchKeys) == 0 {
		return ApplyResult{}, errNoBatch
	}
	res, err := runner.Run(ctx, applyScript, c.keys, c.args...).Result()
	if err != nil {
		return ApplyResult{}, fmt.Errorf("redis apply counters: %w", err)
	}
	r, err := parseApplyReply(res)
	if err != nil {
		return ApplyResult{}, err
	}
	// Positions index the caller's guards and counters: an answer out of
	// their range is not this call's.
	for _, p := range r.Folded {
		if p >= c.NumGuards() {
			return ApplyResult{}, fmt.Errorf("%w: guard %d of %d", ErrUnexpectedReply, p+1, c.NumGuards())
		}
	}
	// The script counts in KEYS order, plain counts first: back to the
	// order the counters were added in.
	for i, p := range r.Overflowed {
		plain := len(c.plain.positions)
		if p < plain || p >= c.counters {
			return ApplyResult{}, fmt.Errorf("%w: counter %d of %d overflowed", ErrUnexpectedReply, p+1, c.counters)
		}
		r.Overflowed[i] = c.guarded.positions[p-plain]
	}
	return r, nil
}

var (
	errNoBatch = errors.New("redis apply counters: a call needs a batch marker")
	// ErrUnexpectedReply is returned for an answer the apply script never
	// gives; retrying will not help.
	ErrUnexpectedReply = errors.New("redis apply counters: unexpected script result")
)

// parseApplyReply reads the script's answer (see apply.lua).
func parseApplyReply(res any) (ApplyResult, error) {
	unexpected := fmt.Errorf("%w %v", ErrUnexpectedReply, res)
	arr, ok := res.([]any)
	if !ok || len(arr) == 0 {
		return ApplyResult{}, unexpected
	}
	nums := make([]int64, len(arr))
	for i, x := range arr {
		if nums[i], ok = x.(int64); !ok {
			return ApplyResult{}, unexpected
		}
	}
	switch {
	case nums[0] == 1 && len(nums) >= 3 && nums[1] >= 0 && nums[2] >= 0 && nums[2] <= int64(len(nums)-3):
		res := ApplyResult{Outcome: Applied, Expired: nums[1]}
		for i, x := range nums[3:] {
			if x < 1 {
				return ApplyResult{}, unexpected
			}
			if int64(i) < nums[2] {
				res.Folded = append(res.Folded, int(x-1))
			} else {
				res.Overflowed = append(res.Overflowed, int(x-1))
			}
		}
		return res, nil
	case (nums[0] == 0 || nums[0] == 2) && len(nums) > 1:
		positions := make([]int, 0, len(nums)-1)
		for _, j := range nums[1:] {
			if j < 1 {
				return ApplyResult{}, unexpected
			}
			positions = append(positions, int(j-1))
		}
		outcome := AppliedBefore
		if nums[0] == 2 {
			outcome = DuplicateResources
		}
		return ApplyResult{Outcome: outcome, Positions: positions}, nil
	default:
		return ApplyResult{}, unexpected
	}
}

// seconds rounds d up to whole seconds, at least one (Redis TTLs are in
// seconds).
func seconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return max(s, 1)
}

// LoadApplyScript loads the apply script into Redis' script cache, so that
// the next call needs no EVAL after a NOSCRIPT.
func LoadApplyScript(ctx context.Context, client redis.UniversalClient) error {
	if err := client.ScriptLoad(ctx, applySource).Err(); err != nil {
		return fmt.Errorf("redis load apply script: %w", err)
	}
	return nil
}
