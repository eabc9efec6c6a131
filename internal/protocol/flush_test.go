package protocol_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// TestStageFinishAndSnapshot: what the apply script writes, STAGE moves into
// a staging entry (counter and pending entry in one step), the snapshot
// ages by Redis' clock, and FINISH removes the entry.
func TestStageFinishAndSnapshot(t *testing.T) {
	t.Parallel()
	client, schema, call, runner := newCall(t)
	ctx := t.Context()
	store := protocol.NewFlushStore(client, runner, schema)
	daily := protocol.Counter{Family: protocol.Daily, EventType: "view", Hour: day}
	call.AddBatch("b")
	call.AddCounter(daily, 5)
	call.Build(ttls)
	_, err := call.Run(ctx, runner)
	require.NoError(t, err)
	// A pending entry scored an hour ago by Redis' clock is at risk for an
	// age of 30 minutes, whatever this process' clock says.
	now := client.Time(ctx).Val()
	require.NoError(t, client.ZAdd(ctx, schema.PendingKey(), redis.Z{Score: float64(now.Add(-time.Hour).UnixMilli()), Member: schema.Key(daily)}).Err())

	snap, err := store.Snapshot(ctx, 30*time.Minute)
	require.NoError(t, err)
	assert.Equal(t, int64(1), snap.Pending)
	assert.Equal(t, int64(1), snap.AtRisk)
	assert.InDelta(t, time.Hour.Seconds(), snap.RedisNow.Sub(snap.OldestPending).Seconds(), 5)

	res, err := store.Stage(ctx, "f1", 100)
	require.NoError(t, err)
	assert.Equal(t, protocol.StageResult{Taken: 1, Fields: []protocol.StagedField{{Key: schema.Key(daily), Value: "5"}}}, res)
	assert.Zero(t, client.Exists(ctx, schema.Key(daily)).Val(), "moved, not copied")
	snap, err = store.Snapshot(ctx, 0)
	require.NoError(t, err)
	assert.Zero(t, snap.Pending)
	require.Len(t, snap.Staging, 1)
	assert.Equal(t, "f1", snap.Staging[0].ID)

	require.NoError(t, store.Finish(ctx, "f1", []protocol.QuarantineOp{{Incr: true, Field: "bad", Value: "2"}}))
	pending, staging, err := store.LeftInRedis(ctx)
	require.NoError(t, err)
	assert.Zero(t, pending)
	assert.Zero(t, staging)
	assert.Equal(t, "2", client.HGet(ctx, schema.QuarantineKey(), "bad").Val())
	require.NoError(t, store.Finish(ctx, "f1", []protocol.QuarantineOp{{Incr: true, Field: "bad", Value: "2"}}))
	assert.Equal(t, "2", client.HGet(ctx, schema.QuarantineKey(), "bad").Val(), "a re-run quarantines nothing twice")
}

// TestStageMovesEveryCounterFamily: STAGE moves the property and sum
// counters too (a zero or negative sum included), not only the daily, hourly
// and per-user ones, and never a cardinality set.
func TestStageMovesEveryCounterFamily(t *testing.T) {
	t.Parallel()
	client, schema, call, runner := newCall(t)
	ctx := t.Context()
	store := protocol.NewFlushStore(client, runner, schema)
	counters := map[protocol.Counter]int64{
		{Family: protocol.Daily, EventType: "view", Hour: day}:                                       1,
		{Family: protocol.Hourly, EventType: "view", Hour: hour}:                                     2,
		{Family: protocol.UserDaily, EventType: "view", UserID: "u", Hour: day}:                      3,
		{Family: protocol.PropertyDaily, EventType: "view", Attribute: "p", Value: "v", Hour: day}:   4,
		{Family: protocol.PropertyHourly, EventType: "view", Attribute: "p", Value: "v", Hour: hour}: 5,
		{Family: protocol.SumDaily, EventType: "view", Attribute: "n", Hour: day}:                    -6,
		{Family: protocol.SumHourly, EventType: "view", Attribute: "n", Hour: hour}:                  0,
	}
	call.AddBatch("b")
	g := call.AddGuard(protocol.Guard{Kind: protocol.GuardPropertyValues, Attribute: "p", Member: "v", Day: day, Limit: 10})
	var want []protocol.StagedField
	for c, n := range counters {
		call.AddGuardedCounter(c, n, protocol.CounterGuards{Dim: g})
		want = append(want, protocol.StagedField{Key: schema.Key(c), Value: strconv.FormatInt(n, 10)})
	}
	call.Build(ttls)
	_, err := call.Run(ctx, runner)
	require.NoError(t, err)

	res, err := store.Stage(ctx, "f1", 100)
	require.NoError(t, err)
	assert.Equal(t, len(counters), res.Taken)
	assert.ElementsMatch(t, want, res.Fields)
	for c := range counters {
		assert.Zero(t, client.Exists(ctx, schema.Key(c)).Val(), "moved, not copied")
	}
	guard := schema.GuardKey(protocol.Guard{Kind: protocol.GuardPropertyValues, Attribute: "p", Day: day})
	assert.Equal(t, int64(1), client.Exists(ctx, guard).Val(), "the cardinality set stays")
}
