package e2e

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// tableRows reads the analytics tables in the shape of expected.
func tableRows(ctx context.Context, t testing.TB, dsn string) *expected {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	got := newExpected()
	queries := []struct {
		sql  string
		into map[string]int64
	}{
		{`SELECT event_type || '|' || to_char(date, 'YYYY-MM-DD'), count FROM analytics_daily`, got.daily},
		{`SELECT event_type || '|' || to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24'), count FROM analytics_hourly`, got.hourly},
		{`SELECT user_id || '|' || event_type || '|' || to_char(date, 'YYYY-MM-DD'), count FROM analytics_user_daily`, got.userDaily},
		{`SELECT event_type || '|' || property || '|' || value || '|' || to_char(date, 'YYYY-MM-DD'), count FROM analytics_property_daily`, got.propDaily},
		{`SELECT event_type || '|' || attribute || '|' || to_char(date, 'YYYY-MM-DD'), sum FROM analytics_sum_daily`, got.sumDaily},
	}
	for _, q := range queries {
		rows, err := conn.Query(ctx, q.sql)
		require.NoError(t, err)
		for rows.Next() {
			var key string
			var count int64
			require.NoError(t, rows.Scan(&key, &count))
			q.into[key] = count
		}
		require.NoError(t, rows.Err())
	}
	return got
}

func sendLogs(ctx context.Context, t testing.TB, d *distro, n, seed int, exp *expected) {
	t.Helper()
	body, err := plogotlp.NewExportRequestFromLogs(logsBatch(n, seed, exp)).MarshalProto()
	require.NoError(t, err)
	d.post(ctx, "/v1/logs", body)
}

func sendTraces(ctx context.Context, t testing.TB, d *distro, n, seed int, exp *expected) {
	t.Helper()
	body, err := ptraceotlp.NewExportRequestFromTraces(tracesBatch(n, seed, exp)).MarshalProto()
	require.NoError(t, err)
	d.post(ctx, "/v1/traces", body)
}

// TestDistroCountsOnShutdownFlush sends logs and spans through the built
// distro with the sample config, stops it, and checks that the final flush
// on shutdown wrote exact rows to all three tables and left Redis empty.
func TestDistroCountsOnShutdownFlush(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb, prefix := testservers.SharedRedis(t)
	dsn := testservers.FreshDatabase(t)
	d := startDistro(t, distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: time.Hour, // only the shutdown flush runs
	})
	exp := newExpected()
	for seed := range 5 {
		sendLogs(ctx, t, d, 600, seed, exp)
		sendTraces(ctx, t, d, 300, seed, exp)
	}
	require.NotEmpty(t, exp.userDaily)
	require.Equal(t, int64(4500), exp.events, "5 × (500 counted logs + 300 spans + 100 span events)")
	// wait_for_result: every acknowledged request is already in Redis.
	require.Positive(t, rdb.ZCard(ctx, prefix+":pending").Val())
	// Records without an event type are dropped and counted, not lost silently.
	metrics := d.scrapeMetrics(ctx)
	assert.Contains(t, metrics, `otelcol_exporter_redis_analytics_events_dropped{reason="missing_event_type",signal="logs"} 500`)
	d.stop()

	assertFlushedExactly(ctx, t, rdb, dsn, prefix, exp)
	keys, err := rdb.Keys(ctx, prefix+":counter:*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys, "counters moved out")
}

// assertFlushedExactly checks that PostgreSQL holds exactly exp and that no
// pending member or staging entry is left under prefix.
func assertFlushedExactly(ctx context.Context, t *testing.T, rdb redis.Cmdable, dsn, prefix string, exp *expected) {
	t.Helper()
	assertTables(t, exp, tableRows(ctx, t, dsn))
	assert.Zero(t, rdb.ZCard(ctx, prefix+":pending").Val(), "pending set drained")
	assert.Zero(t, rdb.ZCard(ctx, prefix+":staging").Val(), "no staging entry left")
}

// TestDistroPeriodicFlush checks that the periodic flush alone moves
// everything while the collector keeps running.
func TestDistroPeriodicFlush(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, prefix := testservers.SharedRedis(t)
	dsn := testservers.FreshDatabase(t)
	d := startDistro(t, distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: 200 * time.Millisecond,
	})
	exp := newExpected()
	for seed := range 10 {
		sendLogs(ctx, t, d, 200, seed, exp)
		sendTraces(ctx, t, d, 100, seed, exp)
	}
	var got *expected
	require.Eventually(t, func() bool {
		got = tableRows(ctx, t, dsn)
		return sameTables(exp, got)
	}, 30*time.Second, 100*time.Millisecond, "periodic flush did not catch up")
	assertTables(t, exp, got)
	d.stop()
}

// scrapeMetrics returns the collector's own metrics in Prometheus text format.
func (d *distro) scrapeMetrics(ctx context.Context) string {
	d.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.metricsURL, http.NoBody)
	require.NoError(d.t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(d.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(d.t, err)
	return string(body)
}

// health returns the health check's verbose status (component statuses).
func (d *distro) health(ctx context.Context) string {
	d.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.healthURL+"?verbose", http.NoBody)
	require.NoError(d.t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(d.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(d.t, err)
	return string(body)
}

func sum(m map[string]int64) int64 {
	var s int64
	for _, v := range m {
		s += v
	}
	return s
}
