package redisanalyticsexporter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/pgflushextension"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadatatest"
)

// floodEnv selects the full size of TestCardinalityFlood
// (CARDINALITY_FLOOD=full: 1,000,000 events, 100,000 event types). Without
// it the test runs at a fiftieth of that (20,000 events, 2,000 types), which
// still goes far over every cap, in a few seconds.
const floodEnv = "CARDINALITY_FLOOD"

// floodSize is how much TestCardinalityFlood sends.
type floodSize struct {
	events, types, users int
}

func floodSizeFromEnv(t *testing.T) floodSize {
	t.Helper()
	switch v := os.Getenv(floodEnv); v {
	case "":
		return floodSize{events: 20_000, types: 2_000, users: 1_000}
	case "full":
		return floodSize{events: 1_000_000, types: 100_000, users: 1_000}
	default:
		t.Fatalf("%s=%q: want full or nothing", floodEnv, v)
		return floodSize{}
	}
}

// floodTables are pg_flush's counter tables and their value column.
var floodTables = []struct{ name, value string }{
	{"analytics_daily", "count"},
	{"analytics_hourly", "count"},
	{"analytics_user_daily", "count"},
	{"analytics_property_daily", "count"},
	{"analytics_property_hourly", "count"},
	{"analytics_sum_daily", "sum"},
	{"analytics_sum_hourly", "sum"},
}

// TestCardinalityFlood sends a flood of distinct event types and property
// values, as a bad deploy or a hostile client would, through a real
// exporter with the default cardinality_limits into the shared Redis, then
// lets a real pg_flush flush everything into a fresh database. The Redis
// keys and the table rows stay bounded by the caps, and the totals stay
// exact: every event is counted, under __other__ when over a cap.
//
// Every event has a distinct random value of the property "request"
// (values cap: 1000 per day), one of 3 values of "plan", a "tokens" sum and
// one of 1000 users; the event types cycle through a shuffled list so that
// each type appears events/types times. Timestamps are spread over
// yesterday (UTC). It logs the figures that docs/performance.md reports.
func TestCardinalityFlood(t *testing.T) {
	size := floodSizeFromEnv(t)
	started := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()

	client, prefix := testservers.SharedRedis(t)
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	cfg := testConfig(testservers.RedisEndpoint(), prefix)
	cfg.TTL = 24 * time.Hour
	cfg.MaxEventAge = defaultMaxEventAge
	cfg.Properties = []PropertyConfig{{Attribute: "request"}, {Attribute: "plan"}}
	cfg.Sums = []SumConfig{{Attribute: "tokens"}}
	limits := createDefaultConfig().(*Config).CardinalityLimits
	require.Equal(t, CardinalityLimits{EventTypesPerDay: 1000, ValuesPerPropertyPerDay: 1000}, limits, "the defaults")
	cfg.CardinalityLimits = limits
	rt := &roundTripTime{}
	le, _ := startLogs(t, cfg, metadatatest.NewSettings(tel), componenttest.NewNopHost(),
		func(e *redisAnalyticsExporter) { e.hooks = append(e.hooks, rt) })

	memBefore := usedMemory(ctx, t, client)
	rng := rand.New(rand.NewPCG(22, uint64(size.events))) //nolint:gosec // deterministic test data
	typeOrder := rng.Perm(size.types)
	day := benchDay()
	const batch = benchBatchSize
	var tokens int64
	for i := 0; i < size.events; i += batch {
		require.NoError(t, ctx.Err(), "sent %d of %d events", i, size.events)
		ld := plog.NewLogs()
		lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
		n := min(batch, size.events-i)
		lrs.EnsureCapacity(n)
		for j := range n {
			lr := lrs.AppendEmpty()
			lr.SetEventName("type-" + strconv.Itoa(typeOrder[(i+j)%size.types]))
			lr.SetTimestamp(pcommon.NewTimestampFromTime(day.Add(time.Duration(rng.Int64N(int64(24 * time.Hour))))))
			attrs := lr.Attributes()
			attrs.PutStr("user.id", "user-"+strconv.Itoa(rng.IntN(size.users)))
			attrs.PutStr("request", strconv.FormatUint(rng.Uint64(), 36))
			attrs.PutStr("plan", [...]string{"free", "pro", "team"}[rng.IntN(3)])
			tok := 1 + rng.Int64N(4000)
			tokens += tok
			attrs.PutInt("tokens", tok)
		}
		require.NoError(t, le.ConsumeLogs(ctx, ld))
	}
	pushed := time.Since(started)

	// Redis before the flush: the counters, the day's guard sets, the
	// pending set and the markers, all under the prefix.
	memPushed := usedMemory(ctx, t, client)
	keys, keyBytes := prefixKeys(ctx, t, client, prefix)
	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	dayHour := protocol.HourOf(day)
	guardSize := func(g protocol.Guard) int64 {
		g.Day = dayHour
		return client.SCard(ctx, schema.GuardKey(g)).Val()
	}
	seenTypes := guardSize(protocol.Guard{Kind: protocol.GuardEventTypes})
	seenRequests := guardSize(protocol.Guard{Kind: protocol.GuardPropertyValues, Attribute: "request"})
	seenPlans := guardSize(protocol.Guard{Kind: protocol.GuardPropertyValues, Attribute: "plan"})
	pending := client.ZCard(ctx, schema.PendingKey()).Val()
	assert.Equal(t, limits.EventTypesPerDay, seenTypes)
	assert.Equal(t, limits.ValuesPerPropertyPerDay, seenRequests)
	assert.Equal(t, int64(3), seenPlans)

	// Bounds from the caps: T event types (__other__ included), V values of
	// request, 3 of plan, U users, 24 hours.
	T, V, U := limits.EventTypesPerDay+1, limits.ValuesPerPropertyPerDay+1, int64(size.users)
	rowBounds := map[string]int64{
		"analytics_daily":           T,
		"analytics_hourly":          24 * T,
		"analytics_user_daily":      T * U,
		"analytics_property_daily":  T * (V + 3),
		"analytics_property_hourly": 24 * T * (V + 3),
		"analytics_sum_daily":       T,
		"analytics_sum_hourly":      24 * T,
	}
	var counterBound int64
	for _, b := range rowBounds {
		counterBound += b
	}
	// Besides the counters: the pending set, 3 guard sets and the batch and
	// resource markers of each push.
	pushes := int64((size.events + batch - 1) / batch)
	assert.LessOrEqual(t, pending, counterBound)
	assert.LessOrEqual(t, keys, counterBound+4+2*pushes)

	// A real pg_flush moves everything into a fresh database: its final
	// flush at Shutdown.
	dsn := testservers.FreshDatabase(t)
	flushStarted := time.Now()
	factory := pgflushextension.NewFactory()
	fcfg := factory.CreateDefaultConfig().(*pgflushextension.Config)
	fcfg.DSN = configopaque.String(dsn)
	fcfg.Redis.Endpoint = testservers.RedisEndpoint()
	fcfg.KeyPrefix = prefix
	fcfg.Timeout = 5 * time.Minute
	ext, err := factory.Create(ctx, extensiontest.NewNopSettings(factory.Type()), fcfg)
	require.NoError(t, err)
	require.NoError(t, ext.Start(ctx, componenttest.NewNopHost()))
	require.NoError(t, ext.Shutdown(ctx))
	flushed := time.Since(flushStarted)
	assert.Zero(t, client.ZCard(ctx, schema.PendingKey()).Val(), "counters left pending after the final flush")
	memFlushed := usedMemory(ctx, t, client)
	keysFlushed, keyBytesFlushed := prefixKeys(ctx, t, client, prefix)

	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(ctx))
	rows := map[string]int64{}
	var report strings.Builder
	for _, tb := range floodTables {
		var n, total int64
		require.NoError(t, conn.QueryRow(ctx, fmt.Sprintf("SELECT count(*), coalesce(sum(%s), 0)::bigint FROM %s", tb.value, tb.name)).Scan(&n, &total))
		rows[tb.name] = n
		assert.LessOrEqual(t, n, rowBounds[tb.name], tb.name)
		fmt.Fprintf(&report, "\n  %-26s %7d rows (bound %d), %s total %d", tb.name, n, rowBounds[tb.name], tb.value, total)
		want := int64(size.events)
		switch tb.name {
		case "analytics_property_daily", "analytics_property_hourly":
			want = 2 * int64(size.events) // two properties, each on every event
		case "analytics_sum_daily", "analytics_sum_hourly":
			want = tokens
		default:
		}
		assert.Equal(t, want, total, "%s: the total of %s", tb.name, tb.value)
	}
	// Per property, every event once; the distinct values within the cap.
	for _, prop := range []string{"request", "plan"} {
		var total, values int64
		require.NoError(t, conn.QueryRow(ctx,
			"SELECT coalesce(sum(count), 0)::bigint, count(DISTINCT value) FROM analytics_property_daily WHERE property = $1", prop).
			Scan(&total, &values))
		assert.Equal(t, int64(size.events), total, "property %s", prop)
		assert.LessOrEqual(t, values, V, "distinct values of %s", prop)
	}
	var types int64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(DISTINCT event_type) FROM analytics_daily").Scan(&types))
	assert.Equal(t, T, types, "the cap's types and __other__")

	// The overflow metric counts the events folded into __other__, as the
	// tables hold them.
	var otherTypes, otherValues int64
	require.NoError(t, conn.QueryRow(ctx, "SELECT coalesce(sum(count), 0)::bigint FROM analytics_daily WHERE event_type = $1",
		protocol.OverflowValue).Scan(&otherTypes))
	require.NoError(t, conn.QueryRow(ctx, "SELECT coalesce(sum(count), 0)::bigint FROM analytics_property_daily WHERE value = $1",
		protocol.OverflowValue).Scan(&otherValues))
	folded := overflowByReason(t, tel)
	assert.Equal(t, otherTypes, folded["event_types"], "events folded into the type __other__")
	assert.Equal(t, otherValues, folded["property_values"], "property values folded into __other__")

	t.Logf("cardinality flood: %d events (%d event types, distinct request values, %d users) in %d pushes of %d; caps %d types, %d values per property per day",
		size.events, size.types, size.users, pushes, batch, limits.EventTypesPerDay, limits.ValuesPerPropertyPerDay)
	t.Logf("push: %s (%.0f events/s, %s per push, of which %s waiting for Redis); flush: %s; total %s", pushed.Round(time.Millisecond),
		float64(size.events)/pushed.Seconds(), (pushed / time.Duration(pushes)).Round(time.Millisecond),
		(time.Duration(rt.d.Load()) / time.Duration(pushes)).Round(time.Millisecond),
		flushed.Round(time.Millisecond), time.Since(started).Round(time.Millisecond))
	t.Logf("Redis after the pushes: %d keys under the prefix (%d pending counters; guard sets: %d types, %d request values, %d plans), MEMORY USAGE %s, used_memory %+d bytes",
		keys, pending, seenTypes, seenRequests, seenPlans, mib(keyBytes), memPushed-memBefore)
	t.Logf("Redis after the flush: %d keys under the prefix, MEMORY USAGE %s, used_memory %+d bytes from the start",
		keysFlushed, mib(keyBytesFlushed), memFlushed-memBefore)
	t.Logf("PostgreSQL after the flush:%s", report.String())
	t.Logf("folded into __other__: %d events by event type, %d property values", otherTypes, otherValues)
}

// usedMemory returns INFO memory's used_memory. The Redis is shared: other
// tests running at the same time move it too.
func usedMemory(ctx context.Context, t *testing.T, client *redis.Client) int64 {
	t.Helper()
	info, err := client.Info(ctx, "memory").Result()
	require.NoError(t, err)
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("INFO memory has no used_memory")
	return 0
}

// prefixKeys returns the number of keys under prefix and the sum of their
// MEMORY USAGE, which only this test moves.
func prefixKeys(ctx context.Context, t *testing.T, client *redis.Client, prefix string) (keys, bytes int64) {
	t.Helper()
	iter := client.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var batch []string
	measure := func() {
		if len(batch) == 0 {
			return
		}
		cmds, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range batch {
				p.MemoryUsage(ctx, k, 0)
			}
			return nil
		})
		require.NoError(t, err)
		for _, c := range cmds {
			bytes += c.(*redis.IntCmd).Val()
		}
		keys += int64(len(batch))
		batch = batch[:0]
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			measure()
		}
	}
	require.NoError(t, iter.Err())
	measure()
	return keys, bytes
}

// overflowByReason sums the cardinality_overflow metric by reason.
func overflowByReason(t *testing.T, tel *componenttest.Telemetry) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	m, err := tel.GetMetric("otelcol_exporter_redis_analytics_cardinality_overflow")
	require.NoError(t, err)
	for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
		reason, _ := dp.Attributes.Value("reason")
		out[reason.AsString()] += dp.Value
	}
	return out
}

// roundTripTime is a go-redis hook adding up the time spent in commands and
// pipelines (the apply script's round trips, Redis' work included).
type roundTripTime struct{ d atomic.Int64 }

func (*roundTripTime) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTripTime) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		r.d.Add(int64(time.Since(start)))
		return err
	}
}

func (r *roundTripTime) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		r.d.Add(int64(time.Since(start)))
		return err
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
