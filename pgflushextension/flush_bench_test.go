package pgflushextension

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// benchCountersEnv selects the benchmark size; the default keeps
// `go test -bench .` quick. The target is 1M counters in <= 10 s:
//
//	PGFLUSH_BENCH_COUNTERS=1000000 go test -run '^$' -bench BenchmarkFlush -benchtime 1x ./pgflushextension/
const (
	benchCountersEnv     = "PGFLUSH_BENCH_COUNTERS"
	defaultBenchCounters = 100_000
	seedChunk            = 10_000
)

func benchCounters(b *testing.B) int {
	b.Helper()
	v := os.Getenv(benchCountersEnv)
	if v == "" {
		return defaultBenchCounters
	}
	n, err := strconv.Atoi(v)
	require.NoError(b, err, benchCountersEnv)
	return n
}

// upsertStrategies are the upsert implementations compared side by side;
// upsertUnnest (the fastest) is the production one.
var upsertStrategies = []struct {
	name string
	fn   upsertFunc
}{
	{"Unnest", upsertUnnest},
	{"Batch", upsertBatch},
	{"Copy", upsertCopy},
	{"Values", upsertValues},
}

// BenchmarkFlush measures one flush of N pending per-user counters from Redis
// into PostgreSQL (STAGE, APPLY, CLEANUP in batch_size batches), per upsert
// strategy. Seeding (pipelined) and truncating the tables are not timed.
func BenchmarkFlush(b *testing.B) {
	n := benchCounters(b)
	for _, s := range upsertStrategies {
		b.Run(fmt.Sprintf("%dUserCountersVia%s", n, s.name), func(b *testing.B) {
			ctx := context.Background()
			env := newTestEnv(b)
			cfg := env.config()
			cfg.Timeout = 10 * time.Minute
			f := env.start(cfg)
			f.upsert = s.fn
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				_, err := env.db.Exec(ctx, "TRUNCATE analytics_user_daily, analytics_flush_ledger, "+strings.Join(rollupTables, ", "))
				require.NoError(b, err)
				seedUserCounters(ctx, b, env.rdb, env.schema, n)
				b.StartTimer()

				st, err := f.flush(ctx)
				require.NoError(b, err)
				require.Equal(b, n, st.counters)
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "counters/s")
		})
	}
}

// BenchmarkUpsert isolates the PostgreSQL side: N per-user counters, already
// parsed into batch_size batches in memory, applied (ledger row + upsert, one
// transaction per batch) per strategy. Truncating the tables is not timed.
func BenchmarkUpsert(b *testing.B) {
	n := benchCounters(b)
	schema, err := protocol.New("bench")
	require.NoError(b, err)
	var batches []*parsedBatch
	for start := 0; start < n; start += defaultBatchSize {
		batches = append(batches, parseBatch(schema, userDailyFields(schema, start, min(start+defaultBatchSize, n))))
	}
	for _, s := range upsertStrategies {
		b.Run(fmt.Sprintf("%dUserCountersVia%s", n, s.name), func(b *testing.B) {
			ctx := context.Background()
			env := newTestEnv(b)
			f := env.start(env.config())
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				_, err := env.db.Exec(ctx, "TRUNCATE analytics_user_daily, analytics_flush_ledger, "+strings.Join(rollupTables, ", "))
				require.NoError(b, err)
				b.StartTimer()
				for _, pb := range batches {
					_, err := applyBatch(ctx, f.pool, s.fn, newFlushID(time.Now()), pb, nil)
					require.NoError(b, err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// userDailyFields returns the staged fields of per-user counters start to
// end-1 (four event types per user, counts 1 to 97), as seedUserCounters
// writes them.
func userDailyFields(schema protocol.Schema, start, end int) []protocol.StagedField {
	fields := make([]protocol.StagedField, 0, end-start)
	for i := start; i < end; i++ {
		fields = append(fields, protocol.StagedField{Key: schema.Key(benchUserCounter(i)), Value: strconv.Itoa(benchUserCount(i))})
	}
	return fields
}

var benchEventTypes = [...]string{"page_view", "click", "sign_up", "purchase"}

// benchUserCounter is the i-th per-user counter of the benchmarks.
func benchUserCounter(i int) protocol.Counter {
	return protocol.Counter{
		Family:    protocol.UserDaily,
		UserID:    "user-" + strconv.Itoa(i/4),
		EventType: benchEventTypes[i%4],
		Hour:      protocol.HourOf(day1) / 24 * 24,
	}
}

func benchUserCount(i int) int { return i%97 + 1 }

// seedUserCounters writes n distinct per-user counters and their pending
// members, pipelined in chunks (the exporter's layout, not its speed).
func seedUserCounters(ctx context.Context, b *testing.B, rdb *redis.Client, schema protocol.Schema, n int) {
	b.Helper()
	now := float64(time.Now().UnixMilli())
	for start := 0; start < n; start += seedChunk {
		end := min(start+seedChunk, n)
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			members := make([]redis.Z, 0, end-start)
			for i := start; i < end; i++ {
				key := schema.Key(benchUserCounter(i))
				p.Set(ctx, key, benchUserCount(i), testCounterTTL)
				members = append(members, redis.Z{Score: now, Member: key})
			}
			p.ZAddNX(ctx, schema.PendingKey(), members...)
			return nil
		})
		require.NoError(b, err)
	}
}

// familySQL describes a family's table for the alternative strategies.
type familySQL struct {
	table, conflict, tmp string
	columns              []string // temp table columns, in COPY order
	tmpDDL               string
	selectExpr           string // target columns from the temp table
	// valuesRow is one VALUES row, a format taking the row's parameter
	// numbers (one %d per column).
	valuesRow string
}

var familySQLs = map[protocol.Family]familySQL{
	protocol.Daily: {
		table: "analytics_daily", conflict: "(event_type, date)", tmp: "pgflush_tmp_daily",
		columns:    []string{"event_type", "day", "count"},
		tmpDDL:     "CREATE TEMP TABLE IF NOT EXISTS pgflush_tmp_daily (event_type text, day int4, count int8) ON COMMIT DELETE ROWS",
		selectExpr: "event_type, DATE '1970-01-01' + day, count, now()",
		valuesRow:  "($%d, DATE '1970-01-01' + $%d::int4, $%d, now())",
	},
	protocol.Hourly: {
		table: "analytics_hourly", conflict: "(event_type, hour)", tmp: "pgflush_tmp_hourly",
		columns:    []string{"event_type", "hour", "count"},
		tmpDDL:     "CREATE TEMP TABLE IF NOT EXISTS pgflush_tmp_hourly (event_type text, hour int8, count int8) ON COMMIT DELETE ROWS",
		selectExpr: "event_type, to_timestamp(hour * 3600), count, now()",
		valuesRow:  "($%d, to_timestamp($%d::int8 * 3600), $%d, now())",
	},
	protocol.UserDaily: {
		table: "analytics_user_daily", conflict: "(user_id, event_type, date)", tmp: "pgflush_tmp_user_daily",
		columns:    []string{"user_id", "event_type", "day", "count"},
		tmpDDL:     "CREATE TEMP TABLE IF NOT EXISTS pgflush_tmp_user_daily (user_id text, event_type text, day int4, count int8) ON COMMIT DELETE ROWS",
		selectExpr: "user_id, event_type, DATE '1970-01-01' + day, count, now()",
		valuesRow:  "($%d, $%d, DATE '1970-01-01' + $%d::int4, $%d, now())",
	},
}

func (s familySQL) targetColumns() string {
	if s.table == "analytics_user_daily" {
		return "(user_id, event_type, date, count, updated_at)"
	}
	if s.table == "analytics_hourly" {
		return "(event_type, hour, count, updated_at)"
	}
	return "(event_type, date, count, updated_at)"
}

// writeValuesRow appends one VALUES row whose parameters start after the
// first args parameters.
func (s familySQL) writeValuesRow(sql *strings.Builder, args int) {
	params := make([]any, len(s.columns))
	for j := range params {
		params[j] = args + j + 1
	}
	fmt.Fprintf(sql, s.valuesRow, params...)
}

func (s familySQL) onConflict() string {
	return " ON CONFLICT " + s.conflict + " DO UPDATE SET count = t.count + EXCLUDED.count, updated_at = EXCLUDED.updated_at"
}

// rowValues returns row i's values in the family's column order.
func rowValues(r *familyRows, i int) []any {
	switch r.family {
	case protocol.Daily:
		return []any{r.eventTypes[i], r.days[i], r.counts[i]}
	case protocol.Hourly:
		return []any{r.eventTypes[i], r.hours[i], r.counts[i]}
	default:
		return []any{r.userIDs[i], r.eventTypes[i], r.days[i], r.counts[i]}
	}
}

// upsertBatch sends one single-row upsert per row in one pgx.Batch.
func upsertBatch(ctx context.Context, tx pgx.Tx, r *familyRows) (int64, error) {
	s, ok := familySQLs[r.family]
	if !ok {
		return upsertUnnest(ctx, tx, r) // the property families: not compared
	}
	var row strings.Builder
	s.writeValuesRow(&row, 0)
	sql := "INSERT INTO " + s.table + " AS t " + s.targetColumns() + " VALUES " + row.String() + s.onConflict()
	batch := &pgx.Batch{}
	for i := range r.len() {
		batch.Queue(sql, rowValues(r, i)...)
	}
	res := tx.SendBatch(ctx, batch)
	var n int64
	for range r.len() {
		tag, err := res.Exec()
		if err != nil {
			_ = res.Close()
			return 0, fmt.Errorf("upsert %s: %w", r.family, err)
		}
		n += tag.RowsAffected()
	}
	return n, res.Close()
}

// upsertCopy COPYs the rows into a temporary table, then upserts them with
// one INSERT ... SELECT ... ON CONFLICT.
func upsertCopy(ctx context.Context, tx pgx.Tx, r *familyRows) (int64, error) {
	s, ok := familySQLs[r.family]
	if !ok {
		return upsertUnnest(ctx, tx, r) // the property families: not compared
	}
	if _, err := tx.Exec(ctx, s.tmpDDL); err != nil {
		return 0, fmt.Errorf("create temp table: %w", err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{s.tmp}, s.columns, pgx.CopyFromSlice(r.len(), func(i int) ([]any, error) {
		return rowValues(r, i), nil
	})); err != nil {
		return 0, fmt.Errorf("copy %s: %w", r.family, err)
	}
	tag, err := tx.Exec(ctx, "INSERT INTO "+s.table+" AS t "+s.targetColumns()+" SELECT "+s.selectExpr+" FROM "+s.tmp+s.onConflict())
	if err != nil {
		return 0, fmt.Errorf("upsert %s: %w", r.family, err)
	}
	return tag.RowsAffected(), nil
}

// maxStatementParams is PostgreSQL's limit of bind parameters per statement.
const maxStatementParams = 65535

// upsertValues sends the rows as multi-row INSERT ... VALUES ... ON CONFLICT
// statements, as many rows per statement as the parameter limit allows.
func upsertValues(ctx context.Context, tx pgx.Tx, r *familyRows) (int64, error) {
	s, ok := familySQLs[r.family]
	if !ok {
		return upsertUnnest(ctx, tx, r) // the property families: not compared
	}
	perStatement := maxStatementParams / len(s.columns)
	var n int64
	for start := 0; start < r.len(); start += perStatement {
		end := min(start+perStatement, r.len())
		var sql strings.Builder
		sql.WriteString("INSERT INTO " + s.table + " AS t " + s.targetColumns() + " VALUES ")
		args := make([]any, 0, (end-start)*len(s.columns))
		for i := start; i < end; i++ {
			if i > start {
				sql.WriteString(", ")
			}
			s.writeValuesRow(&sql, len(args))
			args = append(args, rowValues(r, i)...)
		}
		sql.WriteString(s.onConflict())
		tag, err := tx.Exec(ctx, sql.String(), args...)
		if err != nil {
			return 0, fmt.Errorf("upsert %s rows %d-%d: %w", r.family, start, end, err)
		}
		n += tag.RowsAffected()
	}
	return n, nil
}

// TestUpsertStrategiesAgree runs every strategy on the same batches of all
// three families: they must leave identical tables.
func TestUpsertStrategiesAgree(t *testing.T) {
	t.Parallel()
	incs := awkwardIncrements()
	want := totals{}
	want.add(incs...)
	want.add(incs...)
	for _, s := range upsertStrategies {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			env := newTestEnv(t)
			f := env.start(env.config())
			f.upsert = s.fn
			ctx := t.Context()
			for range 2 {
				require.NoError(t, env.write(ctx, incs...))
				st, err := f.flush(ctx)
				require.NoError(t, err)
				require.Equal(t, len(incs), st.counters)
				require.Equal(t, int64(len(incs)), st.rows[protocol.Daily]+st.rows[protocol.Hourly]+st.rows[protocol.UserDaily])
			}
			require.Equal(t, want, env.readTotals(ctx))
		})
	}
}

// TestUpsertValuesSplitsStatements applies more rows than one multi-row
// statement can carry: every row must arrive, once.
func TestUpsertValuesSplitsStatements(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	f := env.start(env.config())
	ctx := t.Context()
	n := maxStatementParams/len(familySQLs[protocol.UserDaily].columns) + 100
	var wantSum int64
	for i := range n {
		wantSum += int64(benchUserCount(i))
	}
	res, err := applyBatch(ctx, f.pool, upsertValues, newFlushID(time.Now()), parseBatch(env.schema, userDailyFields(env.schema, 0, n)), nil)
	require.NoError(t, err)
	require.Equal(t, int64(n), res.rows[protocol.UserDaily])
	var rows, sum int64
	require.NoError(t, env.db.QueryRow(ctx, "SELECT count(*), sum(count) FROM analytics_user_daily").Scan(&rows, &sum))
	require.Equal(t, int64(n), rows)
	require.Equal(t, wantSum, sum)
}
