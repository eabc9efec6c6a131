package pgflushextension

import (
	"context"
	"errors"
	"math"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// The read benchmark runs the read side's heaviest queries against the
// tables and indexes createSchema makes, on 10M per-user rows:
//
//	make bench-go PKGS=./pgflushextension/ BENCH=BenchmarkReadQueries GO_BENCH_FLAGS='-benchtime 300x'
//
// Data set (readBenchFill): 365 days from 2026-01-01; every day 9,132
// active users out of a pool of 100,000 (a different slice of the pool each
// day), user number s of the day having s%5+1 of 6 event types, counts 1 to
// 20: 27,393 rows a day, 9,998,445 in analytics_user_daily, and
// analytics_daily summed from them. The queries read the last 30 days
// (821,790 per-user rows). The visitors rollups are built from the rows
// (or backfilled by createSchema on a database filled before they existed).
//
// Filling takes minutes, so the database is filled once and kept for the
// next runs: readBenchDatabase, on the shared PostgreSQL, marked with a
// comment that names the data set. A database of that name that this
// benchmark did not create stops the benchmark; one it created for another
// data set (or left half filled) is dropped and filled again. Drop it with
// DROP DATABASE otelcol_analytics_read_bench when done.
const (
	readBenchDatabase = "otelcol_analytics_read_bench"
	// readBenchMarker prefixes the database comment; readBenchSpec names the
	// data set, so that a change of the generator refills the database.
	readBenchMarker = "otelcol-analytics BenchmarkReadQueries: "
	readBenchSpec   = "v1 365 days x 9132 users/day of 100000, s%5+1 of 6 types"
	readBenchFirst  = "2026-01-01"
	readBenchDays   = 365
	// readBenchWindow is the range the queries read: the last 30 days.
	readBenchWindow = 30
)

// readBenchFill generates the per-user rows of days [$1, $2) (offsets from
// readBenchFirst). User number s of day d is user (7s + 1543d) mod 100000,
// so a day's users are distinct and consecutive days overlap in part.
const readBenchFill = `INSERT INTO analytics_user_daily (user_id, event_type, date, count, updated_at)
SELECT 'user-' || lpad(((s * 7 + d * 1543) % 100000)::text, 6, '0'),
       (ARRAY['page_view', 'click', 'search', 'add_to_cart', 'purchase', 'user_signup'])[1 + (s + t) % 6],
       date '` + readBenchFirst + `' + d,
       1 + (s * 31 + d + t) % 20,
       now()
FROM generate_series($1::int, $2::int - 1) AS d, generate_series(0, 9131) AS s, generate_series(0, s % 5) AS t`

// The benchmarked queries, as the query API and the dashboards run them.
const (
	readBenchVisitors = `SELECT date, count(DISTINCT user_id) FROM analytics_user_daily
WHERE date BETWEEN $1 AND $2 GROUP BY date ORDER BY date`
	readBenchVisitorsOfTypes = `SELECT date, count(DISTINCT user_id) FROM analytics_user_daily
WHERE date BETWEEN $1 AND $2 AND event_type = ANY($3) GROUP BY date ORDER BY date`
	readBenchEvents = `SELECT date, sum(count) FROM analytics_daily
WHERE date BETWEEN $1 AND $2 GROUP BY date ORDER BY date`
	// The visitors rollups (rollup.go) that the query API reads for daily
	// buckets: one row per day, or per type and day.
	readBenchVisitorsRollup = `SELECT date, visitors FROM analytics_visitors_daily
WHERE date BETWEEN $1 AND $2 ORDER BY date`
	readBenchTypeVisitorsRollup = `SELECT date, visitors FROM analytics_type_visitors_daily
WHERE date BETWEEN $1 AND $2 AND event_type = ANY($3) ORDER BY date, event_type`
)

// BenchmarkReadQueries measures the latency of one 30-day daily series
// (one row per day) per query, p50 and p99 over the iterations, and logs
// EXPLAIN (ANALYZE, BUFFERS) of each query once, warm.
func BenchmarkReadQueries(b *testing.B) {
	if testing.Short() {
		b.Skip("fills a 10M-row database on its first run")
	}
	ctx := b.Context()
	pool := readBenchPool(ctx, b)
	first, err := time.Parse(time.DateOnly, readBenchFirst)
	require.NoError(b, err)
	to := first.AddDate(0, 0, readBenchDays-1)
	from := to.AddDate(0, 0, -(readBenchWindow - 1))

	twoTypes := []string{"purchase", "user_signup"}
	for _, q := range []struct {
		name string
		sql  string
		args []any
		// rows is the series' length: a row per day, or per type and day.
		rows int
	}{
		{"Visitors30d/AllTypes", readBenchVisitors, []any{from, to}, readBenchWindow},
		{"Visitors30d/TwoTypes", readBenchVisitorsOfTypes, []any{from, to, twoTypes}, readBenchWindow},
		{"Visitors30d/AllTypes/Rollup", readBenchVisitorsRollup, []any{from, to}, readBenchWindow},
		{"Visitors30d/EachOfTwoTypes/Rollup", readBenchTypeVisitorsRollup, []any{from, to, twoTypes}, 2 * readBenchWindow},
		{"Events30d/AllTypes", readBenchEvents, []any{from, to}, readBenchWindow},
	} {
		b.Run(q.name, func(b *testing.B) {
			var latencies []time.Duration
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				days := readBenchQuery(ctx, b, pool, q.sql, q.args...)
				latencies = append(latencies, time.Since(start))
				if days != q.rows {
					b.Fatalf("%d rows in the series, want %d", days, q.rows)
				}
			}
			slices.Sort(latencies)
			b.ReportMetric(msAt(latencies, 0.50), "p50-ms")
			b.ReportMetric(msAt(latencies, 0.99), "p99-ms")
			b.Logf("EXPLAIN (ANALYZE, BUFFERS), warm:\n%s", readBenchExplain(ctx, b, pool, q.sql, q.args...))
		})
	}
}

// msAt is the q quantile of sorted latencies in milliseconds (nearest rank).
func msAt(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	return float64(sorted[max(0, rank-1)]) / float64(time.Millisecond)
}

// readBenchQuery runs one query and reads every row; it returns the rows.
func readBenchQuery(ctx context.Context, b *testing.B, pool *pgxpool.Pool, sql string, args ...any) int {
	b.Helper()
	rows, err := pool.Query(ctx, sql, args...)
	require.NoError(b, err)
	n := 0
	for rows.Next() {
		var (
			day   time.Time
			value int64
		)
		require.NoError(b, rows.Scan(&day, &value))
		n++
	}
	require.NoError(b, rows.Err())
	return n
}

func readBenchExplain(ctx context.Context, b *testing.B, pool *pgxpool.Pool, sql string, args ...any) string {
	b.Helper()
	rows, err := pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+sql, args...)
	require.NoError(b, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(b, err)
	return strings.Join(lines, "\n")
}

// readBenchPool returns a pool on the benchmark's database, creating and
// filling it first when it is missing or holds another data set. It creates
// the schema (indexes included) on every run, so a new index reaches a kept
// database.
func readBenchPool(ctx context.Context, b *testing.B) *pgxpool.Pool {
	b.Helper()
	adminDSN := testservers.PostgresAdminDSN()
	admin, err := pgx.Connect(ctx, adminDSN)
	require.NoError(b, err)
	defer admin.Close(ctx)
	ident := pgx.Identifier{readBenchDatabase}.Sanitize()

	var comment *string
	err = admin.QueryRow(ctx, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
		readBenchDatabase).Scan(&comment)
	exists := !errors.Is(err, pgx.ErrNoRows)
	if exists {
		require.NoError(b, err)
	}
	ready := exists && comment != nil && *comment == readBenchMarker+readBenchSpec
	switch {
	case ready:
	case exists && (comment == nil || !strings.HasPrefix(*comment, readBenchMarker)):
		b.Fatalf("database %s exists but was not created by this benchmark: drop or rename it", readBenchDatabase)
	case exists:
		b.Logf("database %s holds another data set (%q): dropping it", readBenchDatabase, *comment)
		_, err = admin.Exec(ctx, "DROP DATABASE "+ident+" WITH (FORCE)")
		require.NoError(b, err)
		fallthrough
	default:
		_, err = admin.Exec(ctx, "CREATE DATABASE "+ident)
		require.NoError(b, err)
		// Marked at once, so that a fill cut short is recognized as ours.
		_, err = admin.Exec(ctx, "COMMENT ON DATABASE "+ident+" IS "+quoteLiteral(readBenchMarker+"filling"))
		require.NoError(b, err)
	}

	u, err := url.Parse(adminDSN)
	require.NoError(b, err)
	u.Path = "/" + readBenchDatabase
	pool, err := pgxpool.New(ctx, u.String())
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	start := time.Now()
	require.NoError(b, createSchema(ctx, pool))
	if elapsed := time.Since(start); elapsed > time.Second {
		b.Logf("schema (indexes built on the kept rows): %s", elapsed.Round(time.Millisecond))
	}
	if ready {
		// A database filled before the rollups existed: createSchema
		// backfilled them above; VACUUM them once, like the fill does.
		_, err = pool.Exec(ctx, "VACUUM (ANALYZE) "+strings.Join(rollupTables, ", "))
		require.NoError(b, err)
		return pool
	}

	b.Logf("filling %s with ~10M per-user rows (once; kept for later runs)", readBenchDatabase)
	start = time.Now()
	const chunk = 73 // days per statement: 5 statements, a progress line each
	for d := 0; d < readBenchDays; d += chunk {
		_, err = pool.Exec(ctx, readBenchFill, d, min(d+chunk, readBenchDays))
		require.NoError(b, err)
		b.Logf("  days %d-%d: %s", d, min(d+chunk, readBenchDays)-1, time.Since(start).Round(time.Second))
	}
	_, err = pool.Exec(ctx, `INSERT INTO analytics_daily (event_type, date, count, updated_at)
SELECT event_type, date, sum(count), now() FROM analytics_user_daily GROUP BY event_type, date`)
	require.NoError(b, err)
	// The rows went in around the flush's upsert: the rollups are built
	// from them.
	require.NoError(b, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return backfillRollups(ctx, tx) }))
	// VACUUM sets the visibility map, without which an index-only scan
	// fetches every heap page; ANALYZE gives the planner the new sizes.
	_, err = pool.Exec(ctx, "VACUUM (ANALYZE) analytics_user_daily, analytics_daily, "+strings.Join(rollupTables, ", "))
	require.NoError(b, err)
	var rows int64
	require.NoError(b, pool.QueryRow(ctx, "SELECT count(*) FROM analytics_user_daily").Scan(&rows))
	b.Logf("filled: %d rows in %s", rows, time.Since(start).Round(time.Second))
	_, err = admin.Exec(ctx, "COMMENT ON DATABASE "+ident+" IS "+quoteLiteral(readBenchMarker+readBenchSpec))
	require.NoError(b, err)
	return pool
}

// quoteLiteral quotes s as an SQL string literal (COMMENT takes no parameter).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
