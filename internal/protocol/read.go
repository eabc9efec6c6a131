package protocol

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// The read side of the protocol: what a reader (the analytics_query
// extension) needs to add what still waits in Redis to what PostgreSQL
// holds, exactly (invariant 8 in doc.go). Every call reads; none writes.
//
// The commands it sends are ZRANGE, HGETALL and MGET (which also reads the
// flush generation), so a Redis ACL user needs +mget on top of what the
// exporter and the flusher need.

// ReadChunk is how many members or keys one read call takes from Redis: the
// pending set is read in ranges of this many members, their values with one
// MGET per range, so no single command blocks Redis for long.
const ReadChunk = 1000

// FlushGenerationKey holds the flush id of the latest STAGE that took
// counters (stage.lua sets it, with the claim's TTL, in the step that takes
// them). A reader compares it before and after its reads.
func (s Schema) FlushGenerationKey() string { return s.prefix + "flush-generation" }

// CounterValue is a counter read from Redis with its count.
type CounterValue struct {
	Counter Counter
	Count   int64
}

// ReadStore reads the counts that wait in Redis: the pending counters and
// the staging entries, and the flush generation that tells a reader whether
// a STAGE ran while it read.
type ReadStore struct {
	client redis.UniversalClient
	schema Schema
}

// NewReadStore returns the read calls of schema on client.
func NewReadStore(client redis.UniversalClient, schema Schema) *ReadStore {
	return &ReadStore{client: client, schema: schema}
}

// Generation returns the flush generation: the flush id of the latest STAGE
// that took counters, or "" when there is none (no STAGE took counters for
// longer than the key's TTL). Two equal reads around a reader's other
// reads mean that no STAGE ran in between; the TTL (an hour) is far longer
// than a read, so a generation cannot expire and come back unchanged
// within one.
func (r *ReadStore) Generation(ctx context.Context) (string, error) {
	vals, err := r.client.MGet(ctx, r.schema.FlushGenerationKey()).Result()
	if err != nil {
		return "", fmt.Errorf("redis read flush generation: %w", err)
	}
	if len(vals) != 1 {
		return "", fmt.Errorf("redis read flush generation: %w", errBadScriptReply)
	}
	g, _ := vals[0].(string) // nil: no generation
	return g, nil
}

// ReadFilter chooses the counters a reader wants; nil keeps all. It is
// called with every parsed counter before its value is read, so counters
// outside a query cost no value read and no memory.
type ReadFilter func(Counter) bool

// PendingCounters calls fn with every pending counter that keep accepts and
// its count, reading the pending set in ranges of ReadChunk members and the
// values of each range with one MGET. A member that is not a counter key of
// this schema (a family this reader does not know, a foreign key), a key
// gone since (expired, or taken by a STAGE, which the generation reveals)
// and a value that is not an integer are skipped. It returns how many
// pending members it read.
//
// A counter created while the range reads run can shift the members after
// it by one rank (its score is Redis' clock, so it normally lands at the
// end); a member is then read twice, never skipped, and read once in the
// result: fn sees each key at most once.
func (r *ReadStore) PendingCounters(ctx context.Context, keep ReadFilter, fn func(CounterValue)) (int, error) {
	seen := make(map[string]struct{})
	keys := make([]string, 0, ReadChunk)
	counters := make([]Counter, 0, ReadChunk)
	read := 0
	for start := int64(0); ; start += ReadChunk {
		members, err := r.client.ZRange(ctx, r.schema.PendingKey(), start, start+ReadChunk-1).Result()
		if err != nil {
			return read, fmt.Errorf("redis read pending set: %w", err)
		}
		keys, counters = keys[:0], counters[:0]
		for _, m := range members {
			if _, dup := seen[m]; dup {
				continue
			}
			seen[m] = struct{}{}
			read++
			c, err := r.schema.Parse(m)
			if err != nil || (keep != nil && !keep(c)) {
				continue
			}
			keys = append(keys, m)
			counters = append(counters, c)
		}
		if len(keys) > 0 {
			vals, err := r.client.MGet(ctx, keys...).Result()
			if err != nil {
				return read, fmt.Errorf("redis read pending counters: %w", err)
			}
			for i, v := range vals {
				if n, ok := parseCount(v); ok {
					fn(CounterValue{Counter: counters[i], Count: n})
				}
			}
		}
		if len(members) < ReadChunk {
			return read, nil
		}
	}
}

// StagingIDs returns the flush ids in the staging index.
func (r *ReadStore) StagingIDs(ctx context.Context) ([]string, error) {
	ids, err := r.client.ZRange(ctx, r.schema.StagingIndexKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redis read staging index: %w", err)
	}
	return ids, nil
}

// StagedCounters calls fn with every counter of the staging entry of flush
// id that keep accepts and its count. An entry that no longer exists (its
// flusher finished it after committing it to PostgreSQL) yields nothing;
// fields that do not parse (the markers of keys STAGE could not read, keys
// of other families) are skipped, as the flusher quarantines them. A
// staging hash holds at most one flush batch (batch_size fields), which
// HGETALL reads in one call, as the flusher does.
func (r *ReadStore) StagedCounters(ctx context.Context, id string, keep ReadFilter, fn func(CounterValue)) error {
	m, err := r.client.HGetAll(ctx, r.schema.StagingKey(id)).Result()
	if err != nil {
		return fmt.Errorf("redis read staging %s: %w", id, err)
	}
	for k, v := range m {
		c, err := r.schema.Parse(k)
		if err != nil || (keep != nil && !keep(c)) {
			continue
		}
		if n, ok := parseCount(v); ok {
			fn(CounterValue{Counter: c, Count: n})
		}
	}
	return nil
}

// parseCount reads a counter value as Redis returns it: a decimal string,
// or nil for a missing key.
func parseCount(v any) (int64, bool) {
	s, ok := v.(string)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// ErrFlusherNotConnected is returned by a BackendProvider that has not
// reached Redis and PostgreSQL yet (the flusher connects in the
// background), or that was shut down.
var ErrFlusherNotConnected = errors.New("the flusher is not connected to Redis and PostgreSQL")
