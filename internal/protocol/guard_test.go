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
)

var guardTTLs = protocol.ApplyTTLs{Counter: time.Hour, BatchMarker: time.Minute, ResourceMarker: 10 * time.Minute, Guard: 30 * time.Hour}

func typeGuard(typ string, limit int64) protocol.Guard {
	return protocol.Guard{Kind: protocol.GuardEventTypes, Member: typ, Day: day, Limit: limit}
}

// TestGuardFoldsWhatGoesOverTheCap: with room for two event types a day, a
// third type's counters go to the overflow type, in this call and in later
// ones, while the admitted types keep counting under their own names.
func TestGuardFoldsWhatGoesOverTheCap(t *testing.T) {
	t.Parallel()
	client, schema, call, runner := newCall(t)
	ctx := t.Context()
	apply := func(batch string, types ...string) protocol.ApplyResult {
		t.Helper()
		call.Reset()
		call.AddBatch(batch)
		for _, typ := range types {
			g := call.AddGuard(typeGuard(typ, 2))
			call.AddGuardedCounter(protocol.Counter{Family: protocol.Daily, EventType: typ, Hour: day}, 1, protocol.CounterGuards{Type: g})
		}
		call.Build(guardTTLs)
		res, err := call.Run(ctx, runner)
		require.NoError(t, err)
		require.Equal(t, protocol.Applied, res.Outcome)
		return res
	}
	daily := func(typ string) string {
		return client.Get(ctx, schema.Key(protocol.Counter{Family: protocol.Daily, EventType: typ, Hour: day})).Val()
	}

	assert.Equal(t, []int{2}, apply("1", "a", "b", "c").Folded)
	assert.Equal(t, []int{0}, apply("2", "d", "a").Folded, "a full set still admits its members")
	assert.Equal(t, "2", daily("a"))
	assert.Equal(t, "1", daily("b"))
	assert.Equal(t, "2", daily(protocol.OverflowValue))
	assert.Empty(t, daily("c"))
	assert.Empty(t, daily("d"))

	set := schema.GuardKey(typeGuard("", 0))
	assert.ElementsMatch(t, []string{"a", "b"}, client.SMembers(ctx, set).Val())
	assert.InDelta(t, (30 * time.Hour).Seconds(), client.TTL(ctx, set).Val().Seconds(), 5)
	pending := client.ZRange(ctx, schema.PendingKey(), 0, -1).Val()
	assert.Len(t, pending, 3, "a, b and the overflow type are pending")
}

// TestGuardFoldsTypeAndValue: a property counter with both guards goes to
// the key of the guards that failed.
func TestGuardFoldsTypeAndValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		typesFull        bool
		valuesFull       bool
		wantType, wantVa string
	}{
		{"both admitted", false, false, "gen", "gpt-4"},
		{"type folded", true, false, protocol.OverflowValue, "gpt-4"},
		{"value folded", false, true, "gen", protocol.OverflowValue},
		{"both folded", true, true, protocol.OverflowValue, protocol.OverflowValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client, schema, call, runner := newCall(t)
			ctx := t.Context()
			types := protocol.Guard{Kind: protocol.GuardEventTypes, Member: "gen", Day: day, Limit: 1}
			values := protocol.Guard{Kind: protocol.GuardPropertyValues, Attribute: "model", Member: "gpt-4", Day: day, Limit: 1}
			if tt.typesFull {
				require.NoError(t, client.SAdd(ctx, schema.GuardKey(types), "other").Err())
			}
			if tt.valuesFull {
				require.NoError(t, client.SAdd(ctx, schema.GuardKey(values), "other").Err())
			}
			call.AddBatch("b")
			guards := protocol.CounterGuards{Type: call.AddGuard(types), Dim: call.AddGuard(values)}
			ctr := protocol.Counter{Family: protocol.PropertyHourly, EventType: "gen", Attribute: "model", Value: "gpt-4", Hour: hour}
			call.AddGuardedCounter(ctr, 5, guards)
			call.Build(guardTTLs)
			_, err := call.Run(ctx, runner)
			require.NoError(t, err)
			want := ctr
			want.EventType, want.Value = tt.wantType, tt.wantVa
			assert.Equal(t, "5", client.Get(ctx, schema.Key(want)).Val())
			assert.Equal(t, []string{schema.Key(want)}, client.ZRange(ctx, schema.PendingKey(), 0, -1).Val())
		})
	}
}

// TestGuardAbortUndoesMembers: a call that aborts takes back the members it
// added, so a refused push spends no room under a cap.
func TestGuardAbortUndoesMembers(t *testing.T) {
	t.Parallel()
	client, schema, call, runner := newCall(t)
	ctx := t.Context()
	bad := protocol.Counter{Family: protocol.Daily, EventType: "b", Hour: day}
	require.NoError(t, client.LPush(ctx, schema.Key(bad), "x").Err())
	call.AddBatch("b")
	for _, typ := range []string{"a", "b"} {
		g := call.AddGuard(typeGuard(typ, 10))
		call.AddGuardedCounter(protocol.Counter{Family: protocol.Daily, EventType: typ, Hour: day}, 1, protocol.CounterGuards{Type: g})
	}
	call.Build(guardTTLs)
	_, err := call.Run(ctx, runner)
	require.Error(t, err)
	assert.True(t, redis.HasErrorPrefix(err, protocol.AbortPrefix), err)
	assert.Zero(t, client.Exists(ctx, schema.GuardKey(typeGuard("", 0)), schema.BatchKey("b")).Val())
}

// TestGuardSetOfWrongTypeAbortsFirst: a cardinality set key holding another
// type refuses the call before it writes anything.
func TestGuardSetOfWrongTypeAbortsFirst(t *testing.T) {
	t.Parallel()
	client, schema, call, runner := newCall(t)
	ctx := t.Context()
	require.NoError(t, client.Set(ctx, schema.GuardKey(typeGuard("", 0)), "x", 0).Err())
	call.AddBatch("b")
	g := call.AddGuard(typeGuard("a", 10))
	call.AddGuardedCounter(protocol.Counter{Family: protocol.Daily, EventType: "a", Hour: day}, 1, protocol.CounterGuards{Type: g})
	call.Build(guardTTLs)
	_, err := call.Run(ctx, runner)
	require.ErrorContains(t, err, "cardinality set holds a string")
	assert.Zero(t, client.Exists(ctx, schema.BatchKey("b")).Val())
}

// TestSumOverflowLeavesOutThatSum: a sum that would overflow is left out and
// named; the call's other counters apply.
func TestSumOverflowLeavesOutThatSum(t *testing.T) {
	t.Parallel()
	client, schema, call, runner := newCall(t)
	ctx := t.Context()
	sum := protocol.Counter{Family: protocol.SumDaily, EventType: "gen", Attribute: "tokens", Hour: day}
	neg := protocol.Counter{Family: protocol.SumHourly, EventType: "gen", Attribute: "tokens", Hour: hour}
	daily := protocol.Counter{Family: protocol.Daily, EventType: "gen", Hour: day}
	require.NoError(t, client.Set(ctx, schema.Key(sum), math.MaxInt64-1, 0).Err())
	call.AddBatch("b")
	call.AddCounter(daily, 1)
	call.AddCounter(sum, 2)
	call.AddCounter(neg, -7)
	call.Build(guardTTLs)
	res, err := call.Run(ctx, runner)
	require.NoError(t, err)
	assert.Equal(t, protocol.ApplyResult{Outcome: protocol.Applied, Overflowed: []int{1}}, res)
	assert.Equal(t, strconv.FormatInt(math.MaxInt64-1, 10), client.Get(ctx, schema.Key(sum)).Val())
	assert.Equal(t, "-7", client.Get(ctx, schema.Key(neg)).Val())
	assert.ElementsMatch(t, []string{schema.Key(daily), schema.Key(neg)}, client.ZRange(ctx, schema.PendingKey(), 0, -1).Val(),
		"a new sum key is pending, whatever its value")
}

// TestSumOfZeroIsNotReportedExpired: a sum key that exists with the value 0
// is not taken for a new key (which would report it as expired).
func TestSumOfZeroIsNotReportedExpired(t *testing.T) {
	t.Parallel()
	_, _, call, runner := newCall(t)
	ctx := t.Context()
	sum := protocol.Counter{Family: protocol.SumDaily, EventType: "gen", Attribute: "tokens", Hour: day}
	for i, n := range []int64{0, 0, 3} {
		call.Reset()
		call.AddBatch(strconv.Itoa(i))
		call.AddCounter(sum, n)
		call.Build(guardTTLs)
		res, err := call.Run(ctx, runner)
		require.NoError(t, err)
		assert.Equal(t, protocol.ApplyResult{Outcome: protocol.Applied}, res)
	}
}

// TestPlainAndGuardedCountersMix: plain counts (one argument) and the
// other counters keep the positions they were added at in the answer, and
// an abort undoes both kinds.
func TestPlainAndGuardedCountersMix(t *testing.T) {
	t.Parallel()
	client, schema, call, runner := newCall(t)
	ctx := t.Context()
	sum := protocol.Counter{Family: protocol.SumDaily, EventType: "gen", Attribute: "tokens", Hour: day}
	daily := protocol.Counter{Family: protocol.Daily, EventType: "gen", Hour: day}
	require.NoError(t, client.Set(ctx, schema.Key(sum), math.MaxInt64, 0).Err())
	call.AddBatch("1")
	call.AddCounter(sum, 1) // position 0, laid out after the plain count
	call.AddCounter(daily, 2)
	call.Build(guardTTLs)
	res, err := call.Run(ctx, runner)
	require.NoError(t, err)
	assert.Equal(t, []int{0}, res.Overflowed)
	assert.Equal(t, "2", client.Get(ctx, schema.Key(daily)).Val())

	bad := protocol.Counter{Family: protocol.Hourly, EventType: "gen", Hour: hour}
	require.NoError(t, client.LPush(ctx, schema.Key(bad), "x").Err())
	call.Reset()
	call.AddBatch("2")
	g := call.AddGuard(typeGuard("gen", 10))
	call.AddGuardedCounter(protocol.Counter{Family: protocol.Daily, EventType: "gen", Hour: day}, 5, protocol.CounterGuards{Type: g})
	call.AddCounter(protocol.Counter{Family: protocol.Daily, EventType: "other", Hour: day}, 3)
	call.AddGuardedCounter(bad, 1, protocol.CounterGuards{Type: g})
	call.Build(guardTTLs)
	_, err = call.Run(ctx, runner)
	require.Error(t, err)
	assert.Equal(t, "2", client.Get(ctx, schema.Key(daily)).Val(), "the guarded increment is undone")
	assert.Zero(t, client.Exists(ctx, schema.Key(protocol.Counter{Family: protocol.Daily, EventType: "other", Hour: day})).Val(), "the plain one too")
	assert.Zero(t, client.SCard(ctx, schema.GuardKey(typeGuard("", 0))).Val(), "and the member")
}
