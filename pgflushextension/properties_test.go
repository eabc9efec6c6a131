package pgflushextension

import (
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
)

// propertyIncrements touches every property and sum family, with labels that
// need escaping (the separator, braces, '%'), unicode, and sums that are
// negative or zero.
func propertyIncrements() []increment {
	return []increment{
		{propDaily("generation_completed", "model", "gpt-4", day1), 5},
		{propDaily("generation_completed", "model", "gpt-4", day2), 2},
		{propDaily("generation_completed", "model", "a:b{c}%2", day1), 3},
		{propDaily("type:{x}", "plan:tier", "モデル🙂", day1), 1},
		{propDaily("generation_completed", "model", protocol.OverflowValue, day1), 7},
		{propHourly("generation_completed", "model", "gpt-4", day1), 4},
		{propHourly("generation_completed", "model", "gpt-4", day1.Add(time.Hour)), 6},
		{propHourly("type:{x}", "plan:tier", "モデル🙂", day2), 9},
		{sumDaily("generation_completed", "gen_ai.usage.output_tokens", day1), 1200},
		{sumDaily("generation_completed", "gen_ai.usage.output_tokens", day2), -40},
		{sumDaily("refund", "amount:cents{€}", day1), 0},
		{sumHourly("generation_completed", "gen_ai.usage.output_tokens", day1), 800},
		{sumHourly("refund", "amount:cents{€}", day2), -15},
		{sumHourly("refund", "amount:cents{€}", day2.Add(-time.Hour)), 0},
	}
}

// TestFlushPropertyAndSumFamilies: counters of the property and sum families,
// written by the exporter's apply call, land exactly in their tables, daily
// and hourly, with escaped and unicode labels and zero and negative sums;
// later increments add to the rows.
func TestFlushPropertyAndSumFamilies(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	f := env.start(env.config())

	incs := append(propertyIncrements(), awkwardIncrements()...)
	want := totals{}
	require.NoError(t, env.apply(ctx, incs...))
	want.add(incs...)
	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, len(incs), st.counters)
	assert.Zero(t, st.quarantined)
	assert.Equal(t, want, env.readTotals(ctx))
	for fam, rows := range map[protocol.Family]int64{
		protocol.PropertyDaily: 5, protocol.PropertyHourly: 3, protocol.SumDaily: 3, protocol.SumHourly: 3,
	} {
		assert.Equal(t, rows, st.rows[fam], "%s rows", fam)
		assert.Equal(t, rows, metricSum(t, f.tel, "otelcol_pg_flush_rows_upserted", "family", fam.String()), "%s metric", fam)
	}
	requireOnlyMarkersLeft(t, env)

	// The same rows again, sums of the other sign: the rows add up, a sum
	// may come back to 0 or go below it.
	again := propertyIncrements()
	for i := range again {
		if isSum(again[i].counter.Family) {
			again[i].n = -2 * again[i].n
		}
	}
	require.NoError(t, env.apply(ctx, again...))
	want.add(again...)
	st, err = f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, len(again), st.counters)
	assert.Equal(t, want, env.readTotals(ctx))
	assert.Equal(t, int64(-1200), want[rowKey(sumDaily("generation_completed", "gen_ai.usage.output_tokens", day1))])
	assert.Zero(t, metricSum(t, f.tel, "otelcol_pg_flush_sums_overflowed"))
	requireOnlyMarkersLeft(t, env)
}

// TestFlushFoldedProperties: counters that the apply call's cardinality
// guards fold into OverflowValue are flushed into that value's rows, and the
// totals stay exact.
func TestFlushFoldedProperties(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	f := env.start(env.config())
	cfg := redisconn.NewDefaultClientConfig()
	runner := cfg.NewScriptRunner(env.rdb)

	dayStart := protocol.HourOf(day1) / 24 * 24
	want := totals{}
	for i, value := range []string{"gpt-4", "claude", "gpt-4", "llama:3"} {
		call := protocol.NewApplyCall(env.schema)
		call.AddBatch(uuid.NewString())
		g := call.AddGuard(protocol.Guard{Kind: protocol.GuardPropertyValues, Attribute: "model", Member: value, Day: dayStart, Limit: 1})
		c := propDaily("generation_completed", "model", value, day1)
		n := int64(i + 1)
		call.AddGuardedCounter(c, n, protocol.CounterGuards{Dim: g})
		call.Build(applyTTLs)
		res, err := call.Run(ctx, runner)
		require.NoError(t, err)
		require.Equal(t, protocol.Applied, res.Outcome)
		if value != "gpt-4" {
			require.Equal(t, []int{0}, res.Folded, "%s is over the cap of one value", value)
			c.Value = protocol.OverflowValue
		}
		want.add(increment{c, n})
	}
	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, st.counters)
	assert.Equal(t, totals{
		rowKey(propDaily("generation_completed", "model", "gpt-4", day1)):                4,
		rowKey(propDaily("generation_completed", "model", protocol.OverflowValue, day1)): 6,
	}, want)
	assert.Equal(t, want, env.readTotals(ctx))
	// The cardinality set is no counter: it stays (with its TTL), never pending.
	for _, k := range env.keys(ctx) {
		if !env.isBatchMarker(k) {
			assert.Contains(t, k, ":seen:values:")
		}
	}
}

// TestSumOverflowInPostgres: a staged sum that would take its row past the
// BIGINT range (up or down) is left out and counted, the row keeps its value,
// the rest of the batch commits with its ledger row, the staging entry is
// finished, and later flushes go on.
func TestSumOverflowInPostgres(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	f := env.start(env.config())

	high := sumDaily("generation_completed", "tokens:{big}", day1)
	low := sumHourly("refund", "amount", day1)
	fine := sumDaily("generation_completed", "tokens:{big}", day2)
	require.NoError(t, env.apply(ctx, increment{high, math.MaxInt64 - 5}, increment{low, math.MinInt64 + 5}, increment{fine, 1}))
	_, err := f.flush(ctx)
	require.NoError(t, err)

	// Each fits in Redis (a fresh key), not once added to its row.
	require.NoError(t, env.apply(ctx, increment{high, 6}, increment{low, -6}, increment{fine, 10}))
	st, err := f.flush(ctx)
	require.NoError(t, err, "an overflow never fails the flush")
	assert.Equal(t, 3, st.counters)
	assert.Equal(t, int64(1), st.rows[protocol.SumDaily], "the row that fits")
	assert.Zero(t, st.rows[protocol.SumHourly])
	assert.Equal(t, int64(1), st.sumsOverflowed[protocol.SumDaily])
	assert.Equal(t, int64(1), st.sumsOverflowed[protocol.SumHourly])
	assert.Equal(t, totals{
		rowKey(high): math.MaxInt64 - 5,
		rowKey(low):  math.MinInt64 + 5,
		rowKey(fine): 11,
	}, env.readTotals(ctx))
	assert.Equal(t, 2, env.ledgerRows(ctx), "the batch is recorded: its entry is finished, not retried")
	requireOnlyMarkersLeft(t, env)

	assert.Equal(t, int64(1), metricSum(t, f.tel, "otelcol_pg_flush_sums_overflowed", "family", "sum_daily"))
	assert.Equal(t, int64(1), metricSum(t, f.tel, "otelcol_pg_flush_sums_overflowed", "family", "sum_hourly"))
	logged := f.logs.FilterMessageSnippet("overflow BIGINT").All()
	require.Len(t, logged, 2)
	byFamily := map[string]map[string]any{}
	for _, l := range logged {
		assert.Equal(t, "error", l.Level.String())
		fields := l.ContextMap()
		byFamily[fields["family"].(string)] = fields
	}
	assert.Equal(t, "generation_completed", byFamily["sum_daily"]["event_type"])
	assert.Equal(t, "tokens:{big}", byFamily["sum_daily"]["attribute"])
	assert.Equal(t, "2025-06-01", byFamily["sum_daily"]["bucket"])
	assert.Equal(t, int64(6), byFamily["sum_daily"]["sum"])
	assert.Equal(t, "refund", byFamily["sum_hourly"]["event_type"])
	assert.Equal(t, "2025-06-01T09:00Z", byFamily["sum_hourly"]["bucket"])
	assert.Equal(t, int64(-6), byFamily["sum_hourly"]["sum"])

	// The rows are not stuck: an amount that fits is added.
	require.NoError(t, env.apply(ctx, increment{high, -10}, increment{low, 10}))
	st, err = f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), st.rows[protocol.SumDaily])
	assert.Equal(t, int64(1), st.rows[protocol.SumHourly])
	got := env.readTotals(ctx)
	assert.Equal(t, int64(math.MaxInt64-15), got[rowKey(high)])
	assert.Equal(t, int64(math.MinInt64+15), got[rowKey(low)])
}

// TestQuarantinePropertyAndSumFields: malformed fields of the new families
// (a bad key, a non-positive property count, a non-integer sum, text
// PostgreSQL cannot store) go to the quarantine hash, not to the tables; the
// good ones are flushed.
func TestQuarantinePropertyAndSumFields(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	f := env.start(env.config())

	good := propertyIncrements()
	require.NoError(t, env.apply(ctx, good...))
	p := env.prefix
	counts := map[string]int64{
		p + ":prop:view:model:2025-06-01":                 5,  // a label short
		p + ":prop:view:model:v:2025-06-01:24":            5,  // bad hour
		p + ":prop:view:model::2025-06-01":                5,  // empty value
		p + ":prop:view:model:\xff:2025-06-01":            5,  // invalid UTF-8 value
		p + ":sum:view:tokens:x:2025-06-01":               5,  // a label too many
		p + ":sum:view:%00:2025-06-01:10":                 5,  // NUL attribute
		env.schema.Key(propDaily("v", "m", "zero", day1)): 0,  // not a count
		env.schema.Key(propHourly("v", "m", "neg", day1)): -3, // not a count
	}
	for k, n := range counts {
		require.NoError(t, env.rdb.Set(ctx, k, n, 0).Err())
		require.NoError(t, env.rdb.ZAddNX(ctx, env.schema.PendingKey(), redisZ(time.Now(), k)).Err())
	}
	notInt := env.schema.Key(sumDaily("v", "tokens", day1))
	require.NoError(t, env.rdb.Set(ctx, notInt, "1.5", 0).Err())
	require.NoError(t, env.rdb.ZAddNX(ctx, env.schema.PendingKey(), redisZ(time.Now(), notInt)).Err())

	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, len(good), st.counters)
	assert.Equal(t, len(counts)+1, st.quarantined)
	want := totals{}
	want.add(good...)
	assert.Equal(t, want, env.readTotals(ctx), "only the good counters are flushed")

	q, err := env.rdb.HGetAll(ctx, env.schema.QuarantineKey()).Result()
	require.NoError(t, err)
	assert.Len(t, q, len(counts)+1)
	for k, n := range counts {
		assert.Equal(t, strconv.FormatInt(n, 10), q[k], "count of %q kept under its raw key", k)
	}
	assert.Contains(t, q, notInt+"#"+firstStagingID(t, f), "a non-integer value is kept per flush id")
}

// firstStagingID returns the flush id that the quarantine log names.
func firstStagingID(t *testing.T, f *started) string {
	t.Helper()
	logged := f.logs.FilterMessageSnippet("quarantine").All()
	require.Len(t, logged, 1)
	id, ok := logged[0].ContextMap()[keyFlushID].(string)
	require.True(t, ok)
	return id
}

// requireOnlyMarkersLeft requires that Redis holds nothing under the env's
// prefix but the apply calls' batch markers.
func requireOnlyMarkersLeft(t *testing.T, env *testEnv) {
	t.Helper()
	for _, k := range env.keys(t.Context()) {
		require.True(t, env.isBatchMarker(k), "left in Redis: %q", k)
	}
}
