package pgflushextension

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// families lists the counter families in the order they are upserted. A fixed
// order (and rows sorted by primary key inside each family) makes concurrent
// flushers lock rows in the same order, so they do not deadlock.
var families = [...]protocol.Family{protocol.Daily, protocol.Hourly, protocol.UserDaily}

// Keys that rows are aggregated by (the tables' primary keys). Day is days
// and hour is hours since the Unix epoch, UTC.
type (
	dayKey struct {
		eventType string
		day       int32
	}
	hourKey struct {
		eventType string
		hour      int64
	}
	userDayKey struct {
		userID    string
		eventType string
		day       int32
	}
)

// familyRows holds one family's rows as columns, sorted by primary key, ready
// to be sent as arrays. userIDs is set for the user_daily family only; days
// for daily and user_daily, hours for hourly.
type familyRows struct {
	family     protocol.Family
	userIDs    []string
	eventTypes []string
	days       []int32
	hours      []int64
	counts     []int64
}

func (r *familyRows) len() int { return len(r.counts) }

// parsedBatch is the content of one staging entry, aggregated by primary key.
type parsedBatch struct {
	// counters is the number of staged fields that go to PostgreSQL.
	counters   int
	daily      map[dayKey]int64
	hourly     map[hourKey]int64
	userDaily  map[userDayKey]int64
	quarantine []protocol.QuarantineOp
	// quarantineSample holds a few quarantined keys with the reason, for the log.
	quarantineSample []string
}

// maxQuarantineSample bounds the keys listed in the quarantine log line.
const maxQuarantineSample = 10

// parseBatch parses the staged fields of one flush and sums their counts by
// primary key. A field that cannot be stored is never dropped: it becomes a
// quarantine write (HINCRBY of its count under the raw key, or HSET of the raw
// value when it is not an integer).
func parseBatch(schema protocol.Schema, fields []protocol.StagedField) *parsedBatch {
	b := &parsedBatch{
		daily:  make(map[dayKey]int64),
		hourly: make(map[hourKey]int64),
		// Most counters of a batch are per user: sized once, not grown.
		userDaily: make(map[userDayKey]int64, len(fields)),
	}
	for _, f := range fields {
		n, err := strconv.ParseInt(f.Value, 10, 64)
		if err != nil {
			b.addQuarantine(protocol.QuarantineOp{Field: f.Key, Value: f.Value}, "value is not an integer")
			continue
		}
		c, err := schema.Parse(f.Key)
		if err != nil {
			b.addQuarantine(protocol.QuarantineOp{Incr: true, Field: f.Key, Value: f.Value}, err.Error())
			continue
		}
		if !storableText(c.EventType) || !storableText(c.UserID) {
			b.addQuarantine(protocol.QuarantineOp{Incr: true, Field: f.Key, Value: f.Value}, "not valid UTF-8 text for PostgreSQL")
			continue
		}
		b.counters++
		switch c.Family {
		case protocol.Daily:
			b.daily[dayKey{c.EventType, int32(c.Day())}] += n //nolint:gosec // key schema years are 0000-9999: days fit in int32
		case protocol.Hourly:
			b.hourly[hourKey{c.EventType, c.Hour}] += n
		case protocol.UserDaily:
			b.userDaily[userDayKey{c.UserID, c.EventType, int32(c.Day())}] += n //nolint:gosec // key schema years are 0000-9999: days fit in int32
		}
	}
	return b
}

// storableText reports whether s can be stored in a PostgreSQL text column
// (UTF-8 without NUL); key schema keys may carry any bytes.
func storableText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

func (b *parsedBatch) addQuarantine(op protocol.QuarantineOp, reason string) {
	b.quarantine = append(b.quarantine, op)
	if len(b.quarantineSample) < maxQuarantineSample {
		b.quarantineSample = append(b.quarantineSample, strconv.Quote(op.Field)+": "+reason)
	}
}

// rows returns the family's rows sorted by primary key.
func (b *parsedBatch) rows(f protocol.Family) *familyRows {
	r := &familyRows{family: f}
	switch f {
	case protocol.Daily:
		rows := sortedRows(b.daily, dayKey.compare)
		r.eventTypes, r.days, r.counts = make([]string, len(rows)), make([]int32, len(rows)), make([]int64, len(rows))
		for i, row := range rows {
			r.eventTypes[i], r.days[i], r.counts[i] = row.key.eventType, row.key.day, row.count
		}
	case protocol.Hourly:
		rows := sortedRows(b.hourly, hourKey.compare)
		r.eventTypes, r.hours, r.counts = make([]string, len(rows)), make([]int64, len(rows)), make([]int64, len(rows))
		for i, row := range rows {
			r.eventTypes[i], r.hours[i], r.counts[i] = row.key.eventType, row.key.hour, row.count
		}
	case protocol.UserDaily:
		rows := sortedRows(b.userDaily, userDayKey.compare)
		r.userIDs, r.eventTypes, r.days, r.counts = make([]string, len(rows)), make([]string, len(rows)), make([]int32, len(rows)), make([]int64, len(rows))
		for i, row := range rows {
			r.userIDs[i], r.eventTypes[i], r.days[i], r.counts[i] = row.key.userID, row.key.eventType, row.key.day, row.count
		}
	}
	return r
}

// keyCount is one aggregated row: a primary key and its count.
type keyCount[K comparable] struct {
	key   K
	count int64
}

// Primary key orders. Each returns at the first column that differs (cmp.Or
// would compare every column).
func (k dayKey) compare(o dayKey) int {
	if n := strings.Compare(k.eventType, o.eventType); n != 0 {
		return n
	}
	return cmp.Compare(k.day, o.day)
}

func (k hourKey) compare(o hourKey) int {
	if n := strings.Compare(k.eventType, o.eventType); n != 0 {
		return n
	}
	return cmp.Compare(k.hour, o.hour)
}

func (k userDayKey) compare(o userDayKey) int {
	if n := strings.Compare(k.userID, o.userID); n != 0 {
		return n
	}
	return dayKey{k.eventType, k.day}.compare(dayKey{o.eventType, o.day})
}

// sortedRows returns m's entries sorted by key with compare.
func sortedRows[K comparable](m map[K]int64, compare func(a, b K) int) []keyCount[K] {
	rows := make([]keyCount[K], 0, len(m))
	for k, n := range m {
		rows = append(rows, keyCount[K]{k, n})
	}
	slices.SortFunc(rows, func(a, b keyCount[K]) int { return compare(a.key, b.key) })
	return rows
}

// upsertFunc writes one family's rows inside the flush transaction and
// returns the number of rows inserted or updated.
type upsertFunc func(ctx context.Context, tx pgx.Tx, rows *familyRows) (int64, error)

// Upserts through unnest(): one statement per family, the rows sent as three
// or four arrays. Measured fastest (see flush_bench_test.go and README.md).
// Dates and hours travel as integers since the epoch, so no time zone is
// involved anywhere.
const (
	upsertDailySQL = `INSERT INTO analytics_daily AS t (event_type, date, count, updated_at)
SELECT u.event_type, DATE '1970-01-01' + u.day, u.count, now()
FROM unnest($1::text[], $2::int4[], $3::int8[]) AS u(event_type, day, count)
ON CONFLICT (event_type, date) DO UPDATE SET count = t.count + EXCLUDED.count, updated_at = EXCLUDED.updated_at`

	upsertHourlySQL = `INSERT INTO analytics_hourly AS t (event_type, hour, count, updated_at)
SELECT u.event_type, to_timestamp(u.hour * 3600), u.count, now()
FROM unnest($1::text[], $2::int8[], $3::int8[]) AS u(event_type, hour, count)
ON CONFLICT (event_type, hour) DO UPDATE SET count = t.count + EXCLUDED.count, updated_at = EXCLUDED.updated_at`

	upsertUserDailySQL = `INSERT INTO analytics_user_daily AS t (user_id, event_type, date, count, updated_at)
SELECT u.user_id, u.event_type, DATE '1970-01-01' + u.day, u.count, now()
FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[]) AS u(user_id, event_type, day, count)
ON CONFLICT (user_id, event_type, date) DO UPDATE SET count = t.count + EXCLUDED.count, updated_at = EXCLUDED.updated_at`
)

// upsertUnnest is the production upsertFunc.
func upsertUnnest(ctx context.Context, tx pgx.Tx, r *familyRows) (int64, error) {
	var (
		tag pgconn.CommandTag
		err error
	)
	switch r.family {
	case protocol.Daily:
		tag, err = tx.Exec(ctx, upsertDailySQL, r.eventTypes, r.days, r.counts)
	case protocol.Hourly:
		tag, err = tx.Exec(ctx, upsertHourlySQL, r.eventTypes, r.hours, r.counts)
	case protocol.UserDaily:
		tag, err = tx.Exec(ctx, upsertUserDailySQL, r.userIDs, r.eventTypes, r.days, r.counts)
	default:
		return 0, fmt.Errorf("unknown family %s", r.family)
	}
	if err != nil {
		return 0, fmt.Errorf("upsert %s: %w", r.family, err)
	}
	return tag.RowsAffected(), nil
}

// The ledger. applied_at is the time of the last transaction that applied
// the flush id or found it applied: it is when the flush id was last known
// to be staged. A row is pruned once that is older than ledger_retention and
// its flush id is not in the staging index ($2, as the pruning tick read it
// from Redis), so a staging entry never outlives its ledger row however long
// it waits, and the row outlives the entry's CLEANUP by ledger_retention.
const (
	insertLedgerSQL = `INSERT INTO analytics_flush_ledger (flush_id, applied_at, counters) VALUES ($1, now(), $2)
ON CONFLICT (flush_id) DO NOTHING`
	// refreshLedgerSQL runs when insertLedgerSQL found the flush id: it
	// moves applied_at to now (and puts the row back in the unexpected case
	// that it was deleted in between; the batch was applied either way).
	refreshLedgerSQL = `INSERT INTO analytics_flush_ledger (flush_id, applied_at, counters) VALUES ($1, now(), $2)
ON CONFLICT (flush_id) DO UPDATE SET applied_at = EXCLUDED.applied_at`
	pruneLedgerSQL = `DELETE FROM analytics_flush_ledger
WHERE applied_at < now() - $1::int8 * INTERVAL '1 microsecond' AND flush_id <> ALL($2::text[])`
)

// applyResult is the outcome of one committed apply.
type applyResult struct {
	// alreadyApplied: the ledger already held the flush id, nothing was written.
	alreadyApplied bool
	// rows is the number of rows upserted per family (indexed by Family).
	rows [len(families) + 1]int64
}

// maxApplyAttempts bounds the immediate retries of one apply transaction.
const maxApplyAttempts = 3

// applyBatch is APPLY: one transaction that records flush id in the ledger
// and, unless the ledger already held it, upserts every family. It retries at
// once, a few times, when PostgreSQL reports a deadlock or a serialization
// failure or when pgconn says the error happened before anything was sent.
// fp (nil outside the fault-injection tests) is reached at the named steps
// inside the transaction.
func applyBatch(ctx context.Context, pool *pgxpool.Pool, upsert upsertFunc, id string, b *parsedBatch, fp failpointFunc) (applyResult, error) {
	var rows [len(families)]*familyRows
	for i, f := range families {
		rows[i] = b.rows(f)
	}
	var err error
	for range maxApplyAttempts {
		var res applyResult
		res, err = applyOnce(ctx, pool, upsert, id, b.counters, rows, fp)
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil || !retryableApplyError(err) {
			break
		}
	}
	return applyResult{}, err
}

func applyOnce(ctx context.Context, pool *pgxpool.Pool, upsert upsertFunc, id string, counters int, rows [len(families)]*familyRows, fp failpointFunc) (applyResult, error) {
	var res applyResult
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		fp.reach(stepApplyBegun)
		res = applyResult{}
		tag, err := tx.Exec(ctx, insertLedgerSQL, id, counters)
		if err != nil {
			return fmt.Errorf("insert ledger: %w", err)
		}
		fp.reach(stepAfterLedger)
		if tag.RowsAffected() == 0 {
			// Applied before (a recovery after a lost CLEANUP, or two
			// flushers on one entry). Refreshing applied_at keeps the row
			// for ledger_retention after this entry's CLEANUP, whenever
			// the batch was first applied: a flusher that read the entry
			// before that CLEANUP, or a Redis failover that loses it, may
			// still bring the entry back to a flusher (see pruneLedger).
			if _, err := tx.Exec(ctx, refreshLedgerSQL, id, counters); err != nil {
				return fmt.Errorf("refresh ledger: %w", err)
			}
			res.alreadyApplied = true
			return nil
		}
		for _, r := range rows {
			if r.len() == 0 {
				continue
			}
			n, err := upsert(ctx, tx, r)
			if err != nil {
				return err
			}
			res.rows[r.family] = n
		}
		fp.reach(stepBeforeCommit)
		return nil
	})
	if err != nil {
		return applyResult{}, fmt.Errorf("postgres apply: %w", err)
	}
	return res, nil
}

// retryableApplyError reports whether an apply can be retried at once.
func retryableApplyError(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.SQLState() {
		case "40P01", "40001": // deadlock_detected, serialization_failure
			return true
		}
		return false
	}
	return pgconn.SafeToRetry(err)
}

// pruneLedger deletes the ledger rows last applied more than retention ago
// (the index on applied_at keeps it cheap), except those of the flush ids in
// staged, and returns how many it deleted.
//
// staged is the whole staging index, read from Redis earlier in the same
// tick (its snapshot), so less than a tick's "timeout" before the DELETE.
// No entry that a flusher may still apply loses its row:
//   - an entry in staged keeps it;
//   - an entry staged after the read is applied after it, so its row is
//     younger than the time since the read (less than "timeout", far
//     below retention);
//   - an entry cleaned up before the read was applied (inserted or
//     refreshed) just before its CLEANUP, and it can come back to a
//     flusher only for a short while after it: a flusher that read the
//     staging index before the CLEANUP applies it within its tick, and a
//     Redis failover that loses the CLEANUP happens within seconds. Its
//     row is kept for retention after that apply.
func pruneLedger(ctx context.Context, pool *pgxpool.Pool, retention time.Duration, staged []string) (int64, error) {
	if staged == nil {
		staged = []string{} // ALL over NULL would be NULL: no row deleted
	}
	tag, err := pool.Exec(ctx, pruneLedgerSQL, retention.Microseconds(), staged)
	if err != nil {
		return 0, fmt.Errorf("postgres prune ledger: %w", err)
	}
	return tag.RowsAffected(), nil
}
