package pgflushextension

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// upsertFunc writes one count family's rows inside the flush transaction and
// returns the number of rows inserted or updated. The sum families always go
// through upsertSums.
type upsertFunc func(ctx context.Context, tx pgx.Tx, rows *familyRows) (int64, error)

// Upserts through unnest(): one statement per family, the rows sent as one
// array per column. Measured fastest (see flush_bench_test.go and README.md).
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

	// upsertUserDailySQL (rollup.go) also keeps the visitors rollups.

	upsertPropertyDailySQL = `INSERT INTO analytics_property_daily AS t (event_type, property, value, date, count, updated_at)
SELECT u.event_type, u.property, u.value, DATE '1970-01-01' + u.day, u.count, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::int8[]) AS u(event_type, property, value, day, count)
ON CONFLICT (event_type, property, value, date) DO UPDATE SET count = t.count + EXCLUDED.count, updated_at = EXCLUDED.updated_at`

	upsertPropertyHourlySQL = `INSERT INTO analytics_property_hourly AS t (event_type, property, value, hour, count, updated_at)
SELECT u.event_type, u.property, u.value, to_timestamp(u.hour * 3600), u.count, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[]) AS u(event_type, property, value, hour, count)
ON CONFLICT (event_type, property, value, hour) DO UPDATE SET count = t.count + EXCLUDED.count, updated_at = EXCLUDED.updated_at`
)

// Sum upserts. A sum may leave the BIGINT range once added to its row: the
// DO UPDATE's WHERE (in numeric, which cannot overflow) then skips that row
// instead of failing the transaction, which would fail every retry of the
// batch and stop the flush loop for good. The statement answers the 1-based
// positions of the input rows it neither inserted nor updated, the
// overflowed ones (none in the normal case): an anti-join of the input with
// the RETURNING rows, which are the ones written. The rows are inserted in
// array order (sorted by primary key), so concurrent flushers lock them in
// one order.
const (
	upsertSumDailySQL = `WITH u AS MATERIALIZED (
	SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[]) WITH ORDINALITY AS u(event_type, attribute, day, sum, ord)
), w AS (
	INSERT INTO analytics_sum_daily AS t (event_type, attribute, date, sum, updated_at)
	SELECT u.event_type, u.attribute, DATE '1970-01-01' + u.day, u.sum, now() FROM u ORDER BY u.ord
	ON CONFLICT (event_type, attribute, date) DO UPDATE SET sum = t.sum + EXCLUDED.sum, updated_at = EXCLUDED.updated_at
	WHERE t.sum::numeric + EXCLUDED.sum::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
	RETURNING t.event_type, t.attribute, t.date
)
SELECT u.ord FROM u WHERE NOT EXISTS (
	SELECT FROM w WHERE w.event_type = u.event_type AND w.attribute = u.attribute AND w.date = DATE '1970-01-01' + u.day)`

	upsertSumHourlySQL = `WITH u AS MATERIALIZED (
	SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) WITH ORDINALITY AS u(event_type, attribute, hour, sum, ord)
), w AS (
	INSERT INTO analytics_sum_hourly AS t (event_type, attribute, hour, sum, updated_at)
	SELECT u.event_type, u.attribute, to_timestamp(u.hour * 3600), u.sum, now() FROM u ORDER BY u.ord
	ON CONFLICT (event_type, attribute, hour) DO UPDATE SET sum = t.sum + EXCLUDED.sum, updated_at = EXCLUDED.updated_at
	WHERE t.sum::numeric + EXCLUDED.sum::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
	RETURNING t.event_type, t.attribute, t.hour
)
SELECT u.ord FROM u WHERE NOT EXISTS (
	SELECT FROM w WHERE w.event_type = u.event_type AND w.attribute = u.attribute AND w.hour = to_timestamp(u.hour * 3600))`
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
		return upsertUserDaily(ctx, tx, r)
	case protocol.PropertyDaily:
		tag, err = tx.Exec(ctx, upsertPropertyDailySQL, r.eventTypes, r.attributes, r.values, r.days, r.counts)
	case protocol.PropertyHourly:
		tag, err = tx.Exec(ctx, upsertPropertyHourlySQL, r.eventTypes, r.attributes, r.values, r.hours, r.counts)
	default:
		return 0, fmt.Errorf("unknown family %s", r.family)
	}
	if err != nil {
		return 0, fmt.Errorf("upsert %s: %w", r.family, err)
	}
	return tag.RowsAffected(), nil
}

// isSum reports whether f is a sum family, upserted by upsertSums.
func isSum(f protocol.Family) bool { return f == protocol.SumDaily || f == protocol.SumHourly }

// upsertSums writes a sum family's rows inside the flush transaction. It
// returns the number of rows inserted or updated and the positions in r of
// the rows left out because their row's sum would have left the BIGINT range.
func upsertSums(ctx context.Context, tx pgx.Tx, r *familyRows) (int64, []int, error) {
	var (
		rows pgx.Rows
		err  error
	)
	switch r.family {
	case protocol.SumDaily:
		rows, err = tx.Query(ctx, upsertSumDailySQL, r.eventTypes, r.attributes, r.days, r.counts)
	case protocol.SumHourly:
		rows, err = tx.Query(ctx, upsertSumHourlySQL, r.eventTypes, r.attributes, r.hours, r.counts)
	default:
		return 0, nil, fmt.Errorf("not a sum family: %s", r.family)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("upsert %s: %w", r.family, err)
	}
	var (
		skipped []int
		ord     int64
	)
	_, err = pgx.ForEachRow(rows, []any{&ord}, func() error {
		if ord < 1 || ord > int64(r.len()) {
			return fmt.Errorf("row position %d out of range", ord)
		}
		skipped = append(skipped, int(ord-1))
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("upsert %s: %w", r.family, err)
	}
	return int64(r.len() - len(skipped)), skipped, nil
}

// sumOverflow is a sum row that the flush left out: added to its row in
// PostgreSQL, it would have left the BIGINT range.
type sumOverflow struct {
	family    protocol.Family
	eventType string
	attribute string
	// hour is the bucket start in hours since the Unix epoch (UTC).
	hour int64
	sum  int64
}

// overflowsOf returns the rows of r at positions.
func overflowsOf(r *familyRows, positions []int) []sumOverflow {
	out := make([]sumOverflow, len(positions))
	for i, p := range positions {
		o := sumOverflow{family: r.family, eventType: r.eventTypes[p], attribute: r.attributes[p], sum: r.counts[p]}
		if r.family.IsHourly() {
			o.hour = r.hours[p]
		} else {
			o.hour = int64(r.days[p]) * 24
		}
		out[i] = o
	}
	return out
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
	// overflowed lists the sum rows left out (see upsertSums).
	overflowed []sumOverflow
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
			if isSum(r.family) {
				n, skipped, err := upsertSums(ctx, tx, r)
				if err != nil {
					return err
				}
				res.rows[r.family] = n
				res.overflowed = append(res.overflowed, overflowsOf(r, skipped)...)
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
