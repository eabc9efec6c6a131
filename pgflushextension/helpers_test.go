package pgflushextension

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/pgflushextension/internal/metadata"
)

// exporterScript has the semantics of the redis_analytics exporter's apply
// script (redisanalyticsexporter/apply.go) for what the flusher sees, not its
// batch and resource markers or its undo: one atomic script per batch that
// INCRBYs each counter and, only for a key the INCRBY created, sets its TTL
// and adds it to the pending set scored by the given time in ms (ZADD NX). A
// counter's TTL and pending score therefore run from its creation (the first
// count after a flush); later increments renew neither.
//
//	KEYS[1] pending, KEYS[2..] counter keys; ARGV[1] now ms, ARGV[2] ttl s, ARGV[3..] increments
var exporterScript = redis.NewScript(`
local pending = KEYS[1]
for i = 2, #KEYS do
  local n = redis.call('INCRBY', KEYS[i], ARGV[i + 1])
  if n == tonumber(ARGV[i + 1]) then
    redis.call('EXPIRE', KEYS[i], ARGV[2])
    redis.call('ZADD', pending, 'NX', ARGV[1], KEYS[i])
  end
end
return 1
`)

const testCounterTTL = 24 * time.Hour

// increment is one counter increment of an exporter batch.
type increment struct {
	counter protocol.Counter
	n       int64
}

// totals is what PostgreSQL should hold: rowKey -> count.
type totals map[string]int64

func (t totals) add(incs ...increment) {
	for _, inc := range incs {
		t[rowKey(inc.counter)] += inc.n
	}
}

// rowKey names a counter's row the way readTotals does.
func rowKey(c protocol.Counter) string {
	switch c.Family {
	case protocol.Daily:
		return fmt.Sprintf("daily|%s|%s", c.EventType, c.Start().Format(time.DateOnly))
	case protocol.Hourly:
		return fmt.Sprintf("hourly|%s|%s", c.EventType, c.Start().Format("2006-01-02T15"))
	case protocol.PropertyDaily:
		return fmt.Sprintf("property_daily|%s|%s|%s|%s", c.EventType, c.Attribute, c.Value, c.Start().Format(time.DateOnly))
	case protocol.PropertyHourly:
		return fmt.Sprintf("property_hourly|%s|%s|%s|%s", c.EventType, c.Attribute, c.Value, c.Start().Format("2006-01-02T15"))
	case protocol.SumDaily:
		return fmt.Sprintf("sum_daily|%s|%s|%s", c.EventType, c.Attribute, c.Start().Format(time.DateOnly))
	case protocol.SumHourly:
		return fmt.Sprintf("sum_hourly|%s|%s|%s", c.EventType, c.Attribute, c.Start().Format("2006-01-02T15"))
	default:
		return fmt.Sprintf("user_daily|%s|%s|%s", c.UserID, c.EventType, c.Start().Format(time.DateOnly))
	}
}

func daily(eventType string, day time.Time) protocol.Counter {
	return protocol.Counter{Family: protocol.Daily, EventType: eventType, Hour: protocol.HourOf(day) / 24 * 24}
}

func hourly(eventType string, at time.Time) protocol.Counter {
	return protocol.Counter{Family: protocol.Hourly, EventType: eventType, Hour: protocol.HourOf(at)}
}

func userDaily(user, eventType string, day time.Time) protocol.Counter {
	return protocol.Counter{Family: protocol.UserDaily, UserID: user, EventType: eventType, Hour: protocol.HourOf(day) / 24 * 24}
}

func propDaily(eventType, property, value string, day time.Time) protocol.Counter {
	return protocol.Counter{Family: protocol.PropertyDaily, EventType: eventType, Attribute: property, Value: value, Hour: protocol.HourOf(day) / 24 * 24}
}

func propHourly(eventType, property, value string, at time.Time) protocol.Counter {
	return protocol.Counter{Family: protocol.PropertyHourly, EventType: eventType, Attribute: property, Value: value, Hour: protocol.HourOf(at)}
}

func sumDaily(eventType, attribute string, day time.Time) protocol.Counter {
	return protocol.Counter{Family: protocol.SumDaily, EventType: eventType, Attribute: attribute, Hour: protocol.HourOf(day) / 24 * 24}
}

func sumHourly(eventType, attribute string, at time.Time) protocol.Counter {
	return protocol.Counter{Family: protocol.SumHourly, EventType: eventType, Attribute: attribute, Hour: protocol.HourOf(at)}
}

// testEnv is one test's isolated Redis prefix and PostgreSQL database.
type testEnv struct {
	t      testing.TB
	rdb    *redis.Client
	prefix string
	schema protocol.Schema
	dsn    string
	db     *pgxpool.Pool
	redis  string // Redis endpoint
}

// redisStore returns a store on the env's Redis that does not wait for
// replicas: a flusher's Redis side, driven by hand.
func (e *testEnv) redisStore() *protocol.FlushStore {
	cfg := redisconn.NewDefaultClientConfig()
	return protocol.NewFlushStore(e.rdb, cfg.NewScriptRunner(e.rdb), e.schema)
}

// newTestEnv uses the shared servers: a unique key prefix and a fresh database.
func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	rdb, prefix := testservers.SharedRedis(t)
	return newTestEnvWith(t, rdb, prefix, testservers.RedisEndpoint(), testservers.FreshDatabase(t))
}

func newTestEnvWith(t testing.TB, rdb *redis.Client, prefix, redisEndpoint, dsn string) *testEnv {
	t.Helper()
	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	db, err := pgxpool.New(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return &testEnv{t: t, rdb: rdb, prefix: prefix, schema: schema, dsn: dsn, db: db, redis: redisEndpoint}
}

// config returns a config for this env whose loop never ticks during a test:
// tests drive flushes through flush().
func (e *testEnv) config() *Config {
	cfg := createDefaultConfig().(*Config)
	cfg.Redis.Endpoint = e.redis
	cfg.KeyPrefix = e.prefix
	cfg.DSN = configopaque.String(e.dsn)
	cfg.Interval = time.Hour
	cfg.Timeout = 30 * time.Second
	cfg.CounterTTL = testCounterTTL
	return cfg
}

// started is a started flusher with its observed logs and telemetry.
type started struct {
	*flusher
	logs *observer.ObservedLogs
	tel  *componenttest.Telemetry
	host *statusHost
}

// start creates and starts a flusher; Shutdown runs at cleanup.
func (e *testEnv) start(cfg *Config) *started {
	e.t.Helper()
	tel := componenttest.NewTelemetry()
	e.t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	set := extensiontest.NewNopSettings(metadata.Type)
	set.TelemetrySettings = tel.NewTelemetrySettings()
	core, logs := observer.New(zapcore.DebugLevel)
	set.Logger = zap.New(zapcore.NewTee(core, zaptest.NewLogger(e.t, zaptest.Level(zapcore.WarnLevel)).Core()))
	f, err := newFlusher(cfg, set)
	require.NoError(e.t, err)
	host := &statusHost{}
	require.NoError(e.t, f.Start(context.Background(), host))
	e.t.Cleanup(func() { require.NoError(e.t, f.Shutdown(context.Background())) })
	return &started{flusher: f, logs: logs, tel: tel, host: host}
}

// flushAwkwardExactly writes awkwardIncrements, runs one flush of f and
// requires exact totals in PostgreSQL and nothing left in Redis.
func (e *testEnv) flushAwkwardExactly(ctx context.Context, f *started) {
	e.t.Helper()
	incs := awkwardIncrements()
	require.NoError(e.t, e.write(ctx, incs...))
	want := totals{}
	want.add(incs...)
	st, err := f.flush(ctx)
	require.NoError(e.t, err)
	assert.Equal(e.t, len(incs), st.counters)
	assert.Equal(e.t, want, e.readTotals(ctx))
	e.requireRedisEmpty(ctx)
}

// write applies one exporter batch with the exporter's atomic script.
func (e *testEnv) write(ctx context.Context, incs ...increment) error {
	return writeBatch(ctx, e.rdb, e.schema, time.Now(), incs...)
}

func writeBatch(ctx context.Context, rdb redis.Scripter, schema protocol.Schema, now time.Time, incs ...increment) error {
	keys := make([]string, 0, len(incs)+1)
	args := make([]any, 0, len(incs)+2)
	keys = append(keys, schema.PendingKey())
	args = append(args, now.UnixMilli(), int64(testCounterTTL/time.Second))
	for _, inc := range incs {
		keys = append(keys, schema.Key(inc.counter))
		args = append(args, inc.n)
	}
	return exporterScript.Run(ctx, rdb, keys, args...).Err()
}

// applyTTLs are the lifetimes that applyWrite's calls set.
var applyTTLs = protocol.ApplyTTLs{
	Counter: testCounterTTL, BatchMarker: time.Hour, ResourceMarker: time.Minute, Guard: time.Hour,
}

// applyWriteRetryFor bounds how long applyWrite re-sends one batch.
const applyWriteRetryFor = 30 * time.Second

// applyWrite returns a writeFunc that applies each batch with the
// exporter's own apply call (protocol.ApplyCall, apply.lua) under a new
// batch id, re-sending it until Redis acknowledges it (Redis may be down):
// its batch marker makes a resend of an applied batch a no-op. Increments of
// one counter in a batch are summed first (a call takes each counter once).
// A sum that would overflow in Redis is an error: tests keep their sums in
// range.
func applyWrite(rdb redis.UniversalClient, schema protocol.Schema) writeFunc {
	cfg := redisconn.NewDefaultClientConfig()
	runner := cfg.NewScriptRunner(rdb)
	return func(ctx context.Context, incs ...increment) error {
		call := protocol.NewApplyCall(schema)
		call.AddBatch(uuid.NewString())
		byCounter := make(map[protocol.Counter]int, len(incs))
		var counters []increment
		for _, inc := range incs {
			if i, ok := byCounter[inc.counter]; ok {
				counters[i].n += inc.n
				continue
			}
			byCounter[inc.counter] = len(counters)
			counters = append(counters, inc)
		}
		for _, inc := range counters {
			call.AddCounter(inc.counter, inc.n)
		}
		call.Build(applyTTLs)
		retry := time.NewTicker(5 * time.Millisecond)
		defer retry.Stop()
		deadline := time.Now().Add(applyWriteRetryFor)
		for {
			res, err := call.Run(ctx, runner)
			switch {
			case err == nil && len(res.Overflowed) > 0:
				return fmt.Errorf("sums overflowed in Redis: %v", res.Overflowed)
			case err == nil && res.Outcome == protocol.DuplicateResources:
				return fmt.Errorf("unexpected apply outcome %v", res)
			case err == nil || ctx.Err() != nil || time.Now().After(deadline):
				return err // Applied, or AppliedBefore: a resend after a lost reply
			}
			<-retry.C
		}
	}
}

// apply applies one exporter batch with the exporter's apply call, which
// leaves a batch marker behind (see isBatchMarker).
func (e *testEnv) apply(ctx context.Context, incs ...increment) error {
	return applyWrite(e.rdb, e.schema)(ctx, incs...)
}

// isBatchMarker reports whether key is the batch marker of an apply call
// (they outlive the flush, with a TTL).
func (e *testEnv) isBatchMarker(key string) bool {
	return strings.HasPrefix(key, e.schema.BatchKey(""))
}

// redisTime returns the env's Redis clock, which STAGE stamps staging
// entries with.
func (e *testEnv) redisTime(ctx context.Context) time.Time {
	e.t.Helper()
	now, err := e.rdb.Time(ctx).Result()
	require.NoError(e.t, err)
	return now
}

// stageAged runs STAGE with store for a new flush id, as a flusher that dies
// right after it, and backdates the staging entry by age (by Redis's clock,
// as STAGE scores it); it requires that something was staged.
func (e *testEnv) stageAged(ctx context.Context, store *protocol.FlushStore, age time.Duration) protocol.StageResult {
	e.t.Helper()
	id := newFlushID(time.Now())
	res, err := store.Stage(ctx, id, 100)
	require.NoError(e.t, err)
	require.NotEmpty(e.t, res.Fields)
	if age != 0 {
		e.backdateStaging(ctx, id, age)
	}
	return res
}

// backdateStaging sets the staging index score of flush id to age before
// Redis's current time.
func (e *testEnv) backdateStaging(ctx context.Context, id string, age time.Duration) {
	e.t.Helper()
	score := float64(e.redisTime(ctx).Add(-age).UnixMilli())
	n, err := e.rdb.ZAddXX(ctx, e.schema.StagingIndexKey(), redis.Z{Score: score, Member: id}).Result()
	require.NoError(e.t, err)
	require.Zero(e.t, n, "XX: the entry exists, nothing is added")
	require.InDelta(e.t, score, e.rdb.ZScore(ctx, e.schema.StagingIndexKey(), id).Val(), 0)
}

// readTotals returns every row of the counter tables, keyed like rowKey.
func (e *testEnv) readTotals(ctx context.Context) totals {
	e.t.Helper()
	got := totals{}
	queries := []string{
		`SELECT 'daily|' || event_type || '|' || to_char(date, 'YYYY-MM-DD'), count FROM analytics_daily`,
		`SELECT 'hourly|' || event_type || '|' || to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24'), count FROM analytics_hourly`,
		`SELECT 'user_daily|' || user_id || '|' || event_type || '|' || to_char(date, 'YYYY-MM-DD'), count FROM analytics_user_daily`,
		`SELECT 'property_daily|' || event_type || '|' || property || '|' || value || '|' || to_char(date, 'YYYY-MM-DD'), count FROM analytics_property_daily`,
		`SELECT 'property_hourly|' || event_type || '|' || property || '|' || value || '|' || to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24'), count FROM analytics_property_hourly`,
		`SELECT 'sum_daily|' || event_type || '|' || attribute || '|' || to_char(date, 'YYYY-MM-DD'), sum FROM analytics_sum_daily`,
		`SELECT 'sum_hourly|' || event_type || '|' || attribute || '|' || to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24'), sum FROM analytics_sum_hourly`,
	}
	for _, q := range queries {
		rows, err := e.db.Query(ctx, q)
		require.NoError(e.t, err)
		var (
			k string
			n int64
		)
		_, err = pgx.ForEachRow(rows, []any{&k, &n}, func() error {
			got[k] = n
			return nil
		})
		require.NoError(e.t, err)
	}
	return got
}

// ledgerRows counts the rows of the flush ledger.
func (e *testEnv) ledgerRows(ctx context.Context) int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.db.QueryRow(ctx, `SELECT count(*) FROM analytics_flush_ledger`).Scan(&n))
	return n
}

// ledgerHas reports whether the flush ledger holds flush id.
func (e *testEnv) ledgerHas(ctx context.Context, id string) bool {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.db.QueryRow(ctx, `SELECT count(*) FROM analytics_flush_ledger WHERE flush_id = $1`, id).Scan(&n))
	return n == 1
}

// ledgerRowOlderThan reports whether the ledger row of flush id was last
// applied more than age ago, by PostgreSQL's clock (which stamps and prunes
// the ledger). Safe to call from an Eventually condition.
func (e *testEnv) ledgerRowOlderThan(ctx context.Context, id string, age time.Duration) bool {
	var older bool
	err := e.db.QueryRow(ctx, `SELECT applied_at < now() - $2::int8 * INTERVAL '1 microsecond'
FROM analytics_flush_ledger WHERE flush_id = $1`, id, age.Microseconds()).Scan(&older)
	return err == nil && older
}

// commitWithoutCleanup runs a tick of f whose CLEANUP fails right after the
// PostgreSQL commit (the tick's context ends there), as when Redis goes away
// at that moment, and then forgets the flush id as a flusher that died
// would: the batch is committed and its staging entry left for recovery
// after the grace period. It returns the flush id.
func (e *testEnv) commitWithoutCleanup(ctx context.Context, f *started) string {
	e.t.Helper()
	tickCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.failpoint = func(step string) {
		if step == stepAfterCommit {
			cancel()
		}
	}
	_, err := f.flush(tickCtx)
	f.failpoint = nil // the tick is over: no goroutine of it reads the failpoint
	require.ErrorIs(e.t, err, context.Canceled)
	ids, err := e.rdb.ZRange(ctx, e.schema.StagingIndexKey(), 0, -1).Result()
	require.NoError(e.t, err)
	require.Len(e.t, ids, 1, "committed, not cleaned up")
	require.True(e.t, e.ledgerHas(ctx, ids[0]), "committed")
	f.removeOwn(ids[0])
	return ids[0]
}

// keys lists the Redis keys under the env's prefix.
func (e *testEnv) keys(ctx context.Context) []string {
	e.t.Helper()
	var out []string
	claimPrefix := e.schema.StagingClaimKey("")
	iter := e.rdb.Scan(ctx, 0, e.prefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		if strings.HasPrefix(key, claimPrefix) || key == e.schema.FlushGenerationKey() {
			// Flush id claims and the flush generation stay behind on
			// purpose, but never forever.
			ttl, err := e.rdb.TTL(ctx, key).Result()
			require.NoError(e.t, err)
			require.Positive(e.t, ttl, "claim %s must expire", key)
			continue
		}
		out = append(out, key)
	}
	require.NoError(e.t, iter.Err())
	return out
}

// requireRedisEmpty asserts that no counter, pending, staging or other key is left.
func (e *testEnv) requireRedisEmpty(ctx context.Context) {
	e.t.Helper()
	require.Empty(e.t, e.keys(ctx), "Redis must hold no counter, pending member or staging entry")
}

// metricSum returns the sum of an int64 Sum metric's data points whose
// attributes contain attrs (all points when attrs is empty); 0 if absent.
func metricSum(t testing.TB, tel *componenttest.Telemetry, name string, attrs ...string) int64 {
	t.Helper()
	m, err := tel.GetMetric(name)
	if err != nil {
		return 0
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "%s is not an int64 sum", name)
	var total int64
	for _, dp := range sum.DataPoints {
		match := true
		for i := 0; i+1 < len(attrs); i += 2 {
			v, found := dp.Attributes.Value(attribute.Key(attrs[i]))
			if !found || v.AsString() != attrs[i+1] {
				match = false
			}
		}
		if match {
			total += dp.Value
		}
	}
	return total
}

// statusHost records the status events reported through componentstatus.
type statusHost struct {
	mu     sync.Mutex
	events []*componentstatus.Event
}

var _ componentstatus.Reporter = (*statusHost)(nil)

func (h *statusHost) GetExtensions() map[component.ID]component.Component { return nil }

func (h *statusHost) Report(ev *componentstatus.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

func (h *statusHost) statuses() []componentstatus.Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]componentstatus.Status, 0, len(h.events))
	for _, ev := range h.events {
		out = append(out, ev.Status())
	}
	return out
}

// mergeTotals adds src into dst.
func mergeTotals(dst, src totals) {
	for k, v := range maps.All(src) {
		dst[k] += v
	}
}

// redisZ is a pending-set member scored the exporter's way (Unix ms).
func redisZ(at time.Time, member string) redis.Z {
	return redis.Z{Score: float64(at.UnixMilli()), Member: member}
}

type (
	metricdataGaugeFloat = metricdata.Gauge[float64]
	metricdataGaugeInt   = metricdata.Gauge[int64]
)

// nopSettings returns extension settings with a test logger and telemetry.
func nopSettings(t testing.TB) (extension.Settings, *componenttest.Telemetry) {
	t.Helper()
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	set := extensiontest.NewNopSettings(metadata.Type)
	set.TelemetrySettings = tel.NewTelemetrySettings()
	set.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	return set, tel
}
