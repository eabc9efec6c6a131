package protocol_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// TestReadStore: the reader sees the pending counters and the staging
// entries with their counts, skips what is not a counter of the schema, and
// the flush generation changes with every STAGE that takes counters, and
// only then.
func TestReadStore(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb, prefix := testservers.SharedRedis(t)
	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	rc := redisconn.NewDefaultClientConfig()
	runner := rc.NewScriptRunner(rdb)
	reader := protocol.NewReadStore(rdb, schema)
	flush := protocol.NewFlushStore(rdb, runner, schema)

	gen, err := reader.Generation(ctx)
	require.NoError(t, err)
	assert.Empty(t, gen, "no STAGE yet")
	_, err = flush.Stage(ctx, "empty", 10)
	require.NoError(t, err)
	gen, err = reader.Generation(ctx)
	require.NoError(t, err)
	assert.Empty(t, gen, "a STAGE that takes nothing moves no count")

	hour := protocol.HourOf(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	view := protocol.Counter{Family: protocol.Hourly, EventType: "view", Hour: hour}
	user := protocol.Counter{Family: protocol.UserDaily, EventType: "view", UserID: "a:b", Hour: hour / 24 * 24}
	apply := func(cs ...protocol.Counter) {
		call := protocol.NewApplyCall(schema)
		call.AddBatch(testservers.UniqueName("b"))
		for i, c := range cs {
			call.AddCounter(c, int64(i+2))
		}
		call.Build(protocol.ApplyTTLs{Counter: time.Hour, BatchMarker: time.Hour, ResourceMarker: time.Hour})
		_, aerr := call.Run(ctx, runner)
		require.NoError(t, aerr)
	}
	apply(view, user)
	require.NoError(t, rdb.ZAdd(ctx, schema.PendingKey(), redisZ("foreign:key")).Err())

	read := func(members int) map[protocol.Counter]int64 {
		got := map[protocol.Counter]int64{}
		n, rerr := reader.PendingCounters(ctx, nil, func(cv protocol.CounterValue) { got[cv.Counter] += cv.Count })
		require.NoError(t, rerr)
		assert.Equal(t, members, n, "members read, a foreign one included")
		return got
	}
	assert.Equal(t, map[protocol.Counter]int64{view: 2, user: 3}, read(3))
	hourlyOnly := func(c protocol.Counter) bool { return c.Family == protocol.Hourly }
	var kept []protocol.CounterValue
	_, err = reader.PendingCounters(ctx, hourlyOnly, func(cv protocol.CounterValue) { kept = append(kept, cv) })
	require.NoError(t, err)
	assert.Equal(t, []protocol.CounterValue{{Counter: view, Count: 2}}, kept)

	res, err := flush.Stage(ctx, "f1", 10)
	require.NoError(t, err)
	require.Equal(t, 3, res.Taken)
	gen, err = reader.Generation(ctx)
	require.NoError(t, err)
	assert.Equal(t, "f1", gen, "the STAGE that took counters set the generation")
	ttl, err := rdb.TTL(ctx, schema.FlushGenerationKey()).Result()
	require.NoError(t, err)
	assert.Positive(t, ttl, "the generation expires")

	ids, err := reader.StagingIDs(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"f1"}, ids)
	staged := map[protocol.Counter]int64{}
	require.NoError(t, reader.StagedCounters(ctx, "f1", nil, func(cv protocol.CounterValue) { staged[cv.Counter] = cv.Count }))
	assert.Equal(t, map[protocol.Counter]int64{view: 2, user: 3}, staged, "the foreign member is staged as a marker and skipped")
	assert.Empty(t, read(0))

	require.NoError(t, flush.Finish(ctx, "f1", nil))
	staged = map[protocol.Counter]int64{}
	require.NoError(t, reader.StagedCounters(ctx, "f1", nil, func(cv protocol.CounterValue) { staged[cv.Counter] = cv.Count }))
	assert.Empty(t, staged, "a finished entry reads as empty")
}

// TestReadStoreReadsManyChunks: a pending set larger than one chunk is read
// whole, each counter once.
func TestReadStoreReadsManyChunks(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb, prefix := testservers.SharedRedis(t)
	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	rc := redisconn.NewDefaultClientConfig()
	call := protocol.NewApplyCall(schema)
	call.AddBatch("b")
	const n = 2*protocol.ReadChunk + 17
	for i := range n {
		call.AddCounter(protocol.Counter{Family: protocol.Daily, EventType: "t", Hour: int64(i) * 24}, 1)
	}
	call.Build(protocol.ApplyTTLs{Counter: time.Hour, BatchMarker: time.Hour, ResourceMarker: time.Hour})
	_, err = call.Run(ctx, rc.NewScriptRunner(rdb))
	require.NoError(t, err)
	var sum int64
	read, err := protocol.NewReadStore(rdb, schema).PendingCounters(ctx, nil, func(cv protocol.CounterValue) { sum += cv.Count })
	require.NoError(t, err)
	assert.Equal(t, n, read)
	assert.Equal(t, int64(n), sum)
}

func TestFlushGenerationKeySharesTheHashTag(t *testing.T) {
	t.Parallel()
	s, err := protocol.New("{app}")
	require.NoError(t, err)
	assert.Equal(t, "{app}:flush-generation", s.FlushGenerationKey())
}

func redisZ(member string) redis.Z { return redis.Z{Score: 1, Member: member} }
