package protocol_test

import (
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

var (
	hour = protocol.HourOf(time.Date(2025, 6, 1, 10, 30, 0, 0, time.UTC))
	day  = hour - hour%24
	ttls = protocol.ApplyTTLs{Counter: time.Hour, BatchMarker: time.Minute, ResourceMarker: 10 * time.Minute}
)

func newCall(t *testing.T) (*redis.Client, protocol.Schema, *protocol.ApplyCall, *redisconn.ScriptRunner) {
	t.Helper()
	client, prefix := testservers.SharedRedis(t)
	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	cfg := redisconn.NewDefaultClientConfig()
	return client, schema, protocol.NewApplyCall(schema), cfg.NewScriptRunner(client)
}

// TestApplyOnceAndChunkedPending: a call applies once (its batch marker
// turns a repeat into AppliedBefore), and more counters than one ZADD chunk
// all become pending, scored by Redis' clock.
func TestApplyOnceAndChunkedPending(t *testing.T) {
	t.Parallel()
	client, schema, call, runner := newCall(t)
	ctx := t.Context()
	call.AddBatch("fixed-id")
	for i := range 1500 {
		call.AddCounter(protocol.Counter{Family: protocol.UserDaily, EventType: "view", UserID: "user-" + strconv.Itoa(i), Hour: day}, 1)
	}
	call.AddCounter(protocol.Counter{Family: protocol.Daily, EventType: "view", Hour: day}, 1500)
	call.Build(ttls)
	before := client.Time(ctx).Val()
	res, err := call.Run(ctx, runner)
	require.NoError(t, err)
	assert.Equal(t, protocol.ApplyResult{Outcome: protocol.Applied}, res)
	res, err = call.Run(ctx, runner)
	require.NoError(t, err)
	assert.Equal(t, protocol.ApplyResult{Outcome: protocol.AppliedBefore, Positions: []int{0}}, res)

	pending, err := client.ZRangeWithScores(ctx, schema.PendingKey(), 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, pending, 1501)
	for _, z := range pending {
		assert.GreaterOrEqual(t, z.Score, float64(before.UnixMilli()))
	}
	daily := schema.Key(protocol.Counter{Family: protocol.Daily, EventType: "view", Hour: day})
	assert.Equal(t, "1500", client.Get(ctx, daily).Val(), "applied once")
	assert.InDelta(t, time.Hour.Seconds(), client.TTL(ctx, daily).Val().Seconds(), 5)
	ttl := client.TTL(ctx, schema.BatchKey("fixed-id")).Val()
	assert.Greater(t, ttl, time.Duration(0))
	assert.LessOrEqual(t, ttl, time.Minute)
}

// TestApplyGroupAnswersWhichBatchesWereApplied: a group whose pushes were
// partly applied before writes nothing and names them; without them it
// applies.
func TestApplyGroupAnswersWhichBatchesWereApplied(t *testing.T) {
	t.Parallel()
	client, schema, call, runner := newCall(t)
	ctx := t.Context()
	daily := protocol.Counter{Family: protocol.Daily, EventType: "view", Hour: day}
	call.AddBatch("b")
	call.AddCounter(daily, 1)
	call.Build(ttls)
	_, err := call.Run(ctx, runner)
	require.NoError(t, err)

	call.Reset()
	for _, id := range []string{"a", "b", "c"} {
		call.AddBatch(id)
	}
	call.AddCounter(daily, 3)
	call.Build(ttls)
	res, err := call.Run(ctx, runner)
	require.NoError(t, err)
	assert.Equal(t, protocol.ApplyResult{Outcome: protocol.AppliedBefore, Positions: []int{1}}, res)
	assert.Zero(t, client.Exists(ctx, schema.BatchKey("a"), schema.BatchKey("c")).Val(), "nothing written")
	assert.Equal(t, "1", client.Get(ctx, schema.Key(daily)).Val())

	call.Reset()
	call.AddBatch("a")
	call.AddBatch("c")
	call.AddCounter(daily, 2)
	call.Build(ttls)
	res, err = call.Run(ctx, runner)
	require.NoError(t, err)
	assert.Equal(t, protocol.Applied, res.Outcome)
	assert.Equal(t, "3", client.Get(ctx, schema.Key(daily)).Val())
	assert.Equal(t, int64(2), client.Exists(ctx, schema.BatchKey("a"), schema.BatchKey("c")).Val())
}

// TestApplyResourceMarkers: a call whose resource marker exists writes
// nothing and names it.
func TestApplyResourceMarkers(t *testing.T) {
	t.Parallel()
	client, schema, call, runner := newCall(t)
	ctx := t.Context()
	daily := protocol.Counter{Family: protocol.Daily, EventType: "view", Hour: day}
	call.AddBatch("first")
	call.AddResourceMarker(1, 2)
	call.AddCounter(daily, 1)
	call.Build(ttls)
	_, err := call.Run(ctx, runner)
	require.NoError(t, err)
	assert.Equal(t, schema.ResourceKey("00000000000000010000000000000002"), string(schema.AppendResourceKey(nil, 1, 2)))

	call.Reset()
	call.AddBatch("second")
	call.AddResourceMarker(3, 4)
	call.AddResourceMarker(1, 2)
	call.AddCounter(daily, 2)
	call.Build(ttls)
	res, err := call.Run(ctx, runner)
	require.NoError(t, err)
	assert.Equal(t, protocol.ApplyResult{Outcome: protocol.DuplicateResources, Positions: []int{1}}, res)
	assert.Zero(t, client.Exists(ctx, schema.BatchKey("second")).Val(), "the batch marker is removed again")
	assert.Equal(t, "1", client.Get(ctx, schema.Key(daily)).Val())
	ttl := client.TTL(ctx, string(schema.AppendResourceKey(nil, 1, 2))).Val()
	assert.InDelta(t, (10 * time.Minute).Seconds(), ttl.Seconds(), 5, "the found marker's TTL is renewed")
}

// TestApplyReportsExpiredCounters: a counter key created while its pending
// entry still exists expired before its flush.
func TestApplyReportsExpiredCounters(t *testing.T) {
	t.Parallel()
	client, schema, call, runner := newCall(t)
	ctx := t.Context()
	a := protocol.Counter{Family: protocol.Daily, EventType: "a", Hour: day}
	b := protocol.Counter{Family: protocol.Daily, EventType: "b", Hour: day}
	call.AddBatch("1")
	call.AddCounter(a, 1)
	call.AddCounter(b, 1)
	call.Build(ttls)
	_, err := call.Run(ctx, runner)
	require.NoError(t, err)
	require.NoError(t, client.Del(ctx, schema.Key(a)).Err()) // expired: the key goes, its pending entry stays

	call.Reset()
	call.AddBatch("2")
	call.AddCounter(a, 1)
	call.AddCounter(b, 1)
	call.Build(ttls)
	res, err := call.Run(ctx, runner)
	require.NoError(t, err)
	assert.Equal(t, protocol.ApplyResult{Outcome: protocol.Applied, Expired: 1}, res)
}

// TestApplyOverflowAbortsAndUndoes: an increment that overflows undoes the
// whole call, markers included, and answers with AbortPrefix.
func TestApplyOverflowAbortsAndUndoes(t *testing.T) {
	t.Parallel()
	client, schema, call, runner := newCall(t)
	ctx := t.Context()
	hourly := protocol.Counter{Family: protocol.Hourly, EventType: "view", Hour: hour}
	daily := protocol.Counter{Family: protocol.Daily, EventType: "view", Hour: day}
	require.NoError(t, client.Set(ctx, schema.Key(hourly), math.MaxInt64, 0).Err())
	call.AddBatch("b")
	call.AddBatch("b2")
	call.AddResourceMarker(1, 1)
	call.AddResourceMarker(2, 2)
	call.AddCounter(daily, 1)
	call.AddCounter(hourly, 1)
	call.Build(ttls)
	_, err := call.Run(ctx, runner)
	require.Error(t, err)
	assert.True(t, redis.HasErrorPrefix(err, protocol.AbortPrefix), err)
	require.ErrorContains(t, err, "overflow")
	assert.Zero(t, client.Exists(ctx, schema.Key(daily), schema.BatchKey("b"), schema.BatchKey("b2"), schema.PendingKey(),
		string(schema.AppendResourceKey(nil, 1, 1)), string(schema.AppendResourceKey(nil, 2, 2))).Val(), "markers undone too")
	assert.Equal(t, strconv.FormatInt(math.MaxInt64, 10), client.Get(ctx, schema.Key(hourly)).Val())
}

func TestApplyCallLayout(t *testing.T) {
	t.Parallel()
	schema, err := protocol.New("p")
	require.NoError(t, err)
	call := protocol.NewApplyCall(schema)
	call.AddBatch("b1")
	call.AddResourceMarker(0xc7e0f1a2b3c4d5e6, 0xf708192a3b4c5d6e)
	call.AddCounter(protocol.Counter{Family: protocol.Daily, EventType: "view", Hour: 0}, 7)
	call.Build(protocol.ApplyTTLs{Counter: 1500 * time.Millisecond, BatchMarker: time.Minute, ResourceMarker: time.Hour})
	assert.Equal(t, []string{"p:pending", "p:batch:b1", "p:res:c7e0f1a2b3c4d5e6f708192a3b4c5d6e", "p:counter:view:1970-01-01"}, call.Keys())
	// One plain count: one argument.
	assert.Equal(t, []any{int64(2), int64(60), int64(1), int64(1), int64(3600), int64(0), int64(1), int64(1), int64(7)}, call.Args())

	call.Reset()
	call.AddBatch("b1")
	types := call.AddGuard(protocol.Guard{Kind: protocol.GuardEventTypes, Member: "view", Day: 0, Limit: 10})
	values := call.AddGuard(protocol.Guard{Kind: protocol.GuardPropertyValues, Attribute: "plan", Member: "pro", Day: 0, Limit: 5})
	call.AddGuardedCounter(protocol.Counter{Family: protocol.PropertyDaily, EventType: "view", Attribute: "plan", Value: "pro", Hour: 0}, 3,
		protocol.CounterGuards{Type: types, Dim: values})
	call.AddGuardedCounter(protocol.Counter{Family: protocol.SumHourly, EventType: "view", Attribute: "tokens", Hour: 1}, -4,
		protocol.CounterGuards{Type: types, Dim: values}) // a sum has no value guard: Dim is ignored
	call.Build(protocol.ApplyTTLs{Counter: time.Second, BatchMarker: time.Second, ResourceMarker: time.Second, Guard: 48 * time.Hour})
	assert.Equal(t, []string{
		"p:pending", "p:batch:b1", "p:seen:types:1970-01-01", "p:seen:values:plan:1970-01-01",
		"p:prop:view:plan:pro:1970-01-01", "p:prop:__other__:plan:pro:1970-01-01",
		"p:prop:view:plan:__other__:1970-01-01", "p:prop:__other__:plan:__other__:1970-01-01",
		"p:sum:view:tokens:1970-01-01:01", "p:sum:__other__:tokens:1970-01-01:01",
	}, call.Keys())
	assert.Equal(t, []any{
		int64(1), int64(1), int64(1), int64(0), int64(1), int64(2), int64(172800), int64(0),
		"view", int64(10), "pro", int64(5),
		int64(3), int64(1), int64(2), int64(0),
		int64(-4), int64(1), int64(0), int64(1),
	}, call.Args())

	_, err = protocol.NewApplyCall(schema).Run(t.Context(), nil)
	require.Error(t, err, "a call needs a batch marker")
}

// TestParseApplyArgsReadsBuild: what Build lays out, ParseApplyArgs reads
// back.
func TestParseApplyArgsReadsBuild(t *testing.T) {
	t.Parallel()
	schema, err := protocol.New("p")
	require.NoError(t, err)
	call := protocol.NewApplyCall(schema)
	call.AddBatch("b1")
	call.AddBatch("b2")
	call.AddResourceMarker(1, 2)
	types := call.AddGuard(protocol.Guard{Kind: protocol.GuardEventTypes, Member: "v", Limit: 3})
	users := call.AddGuard(protocol.Guard{Kind: protocol.GuardUsers, Member: "u", Limit: 4})
	user := protocol.Counter{Family: protocol.UserDaily, EventType: "v", UserID: "u"}
	sum := protocol.Counter{Family: protocol.SumHourly, EventType: "v", Attribute: "n", Hour: 5}
	call.AddCounter(protocol.Counter{Family: protocol.Daily, EventType: "v"}, 2)
	call.AddGuardedCounter(user, 1, protocol.CounterGuards{Type: types, Dim: users})
	call.AddGuardedCounter(sum, -9, protocol.CounterGuards{Type: types})
	call.Build(protocol.ApplyTTLs{Counter: time.Second, BatchMarker: 2 * time.Second, ResourceMarker: 3 * time.Second, Guard: 4 * time.Second})

	l, err := protocol.ParseApplyArgs(call.Keys(), call.Args())
	require.NoError(t, err)
	assert.Equal(t, "p:pending", l.Pending)
	assert.Equal(t, []string{"p:batch:b1", "p:batch:b2"}, l.Batches)
	assert.Len(t, l.Markers, 1)
	assert.Equal(t, []protocol.LaidOutGuard{{Key: "p:seen:types:1970-01-01", Member: "v", Limit: 3}, {Key: "p:seen:users:1970-01-01", Member: "u", Limit: 4}}, l.Guards)
	assert.Equal(t, []int64{1, 2, 3, 4}, []int64{l.CounterTTL, l.BatchMarkerTTL, l.ResourceMarkerTTL, l.GuardTTL})
	require.Len(t, l.Counters, 3)
	assert.Equal(t, protocol.LaidOutCounter{Key: "p:counter:v:1970-01-01", Folded: []string{}, Incr: 2}, l.Counters[0])
	assert.Equal(t, schema.Key(user), l.Counters[1].Key)
	assert.Len(t, l.Counters[1].Folded, 3)
	assert.Equal(t, protocol.LaidOutCounter{Key: schema.Key(sum), Folded: []string{"p:sum:__other__:n:1970-01-01:05"}, Incr: -9, TypeGuard: 1, Sum: true}, l.Counters[2])

	_, err = protocol.ParseApplyArgs(call.Keys()[:len(call.Keys())-1], call.Args())
	require.Error(t, err)
}
